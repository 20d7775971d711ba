"""Card ``preprocessing.normalize``: what a channel's values depend on, and how a bad value is refused.

The subject comes from the synthetic engine (seed 9101, not a training seed) on a 3 mm grid.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.bundle import BundleError, load_bundle
from models.engine import InferenceEngine
from models.preprocess import normalize
from training.ft_config import parse_finetune_config

SEQS = ["T1", "T1C", "T2", "FLAIR"]


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    from training.synth import generate_subject

    s = generate_subject(9101, voxel_mm=3.0, tumour=True)
    images = {str(k.value if hasattr(k, "value") else k): np.asarray(v, dtype=np.float32) for k, v in s.images.items()}
    return np.stack([images[c] for c in SEQS])


def _flair_alone(x: np.ndarray) -> np.ndarray:
    only = x.copy()
    only[:3] = 0
    return only


def test_per_channel_values_do_not_depend_on_the_other_channels(stack) -> None:
    fl = SEQS.index("FLAIR")
    all_present = [True] * 4
    alone = [False, False, False, True]
    per_all = normalize(stack, all_present, "zscore_per_channel")
    per_alone = normalize(_flair_alone(stack), alone, "zscore_per_channel")
    np.testing.assert_allclose(per_all[fl], per_alone[fl], atol=1e-5)
    assert not per_alone[:3].any(), "absent channels are zeros"
    # The union foreground (the older method) gives FLAIR other values when the other sequences
    # are there: what a model trained on four channels and dropout saw is not what FLAIR alone gives.
    union_all = normalize(stack, all_present, "zscore_foreground")
    union_alone = normalize(_flair_alone(stack), alone, "zscore_foreground")
    assert float(np.abs(union_all[fl] - union_alone[fl]).mean()) > 0.1
    # both are z-scores: over its own foreground a channel has mean 0 and sd 1
    from models.preprocess import foreground_mask

    own = foreground_mask(stack[fl : fl + 1], [True])
    assert abs(float(per_all[fl][own].mean())) < 0.05 and abs(float(per_all[fl][own].std()) - 1) < 0.05


def test_unknown_method_is_a_sentence_naming_the_key(stack, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"preprocessing\.normalize 'minmax' is not one of"):
        normalize(stack, [True] * 4, "minmax")
    src = load_bundle("brain-tumour-demo").path
    dst = tmp_path / "bad-normalize"
    shutil.copytree(src, dst)
    card = json.loads((dst / "card.json").read_text())
    card["preprocessing"]["normalize"] = "minmax"
    (dst / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match=r"preprocessing\.normalize 'minmax'"):
        InferenceEngine(load_bundle(dst), device="cpu", threads=1)
    raw = {"name": "x", "network": {"encoder": {"name": "swin3d"}}, "preprocessing": {"normalize": "minmax"}}
    with pytest.raises(ValueError, match=r"config key 'preprocessing.normalize': 'minmax' is not one of"):
        parse_finetune_config(raw, "cfg.toml")


def test_head_mask_keeps_every_tumour_voxel_and_removes_tumour_in_the_air() -> None:
    """``preprocessing.mask_outside_head``: the mask covers the tumour from any single sequence, not the air."""
    import torch

    from models.engine import background_outside, head_mask
    from training.synth import generate_subject

    s = generate_subject(9102, voxel_mm=3.0, tumour=True)
    images = {str(k.value if hasattr(k, "value") else k): np.asarray(v, dtype=np.float32) for k, v in s.images.items()}
    labels = np.asarray(s.labels)
    assert (labels > 0).any()
    for keep in (["FLAIR"], ["T1"], ["T1C"], ["T2"], SEQS):
        present = [c in keep for c in SEQS]
        x = normalize(np.stack([images[c] if c in keep else np.zeros_like(images[c]) for c in SEQS]), present,
                      "zscore_per_channel")
        mask = head_mask(InferenceEngine.foreground(torch.from_numpy(x)))
        assert mask[labels > 0].all(), f"tumour outside the head mask with {keep}"
        assert 0.2 < mask.mean() < 0.9 and not mask[0, 0, 0], f"the head mask with {keep} is not a head"
    # tumour predicted everywhere: kept inside the mask, certain background outside
    probs = torch.zeros((4, *labels.shape))
    probs[1] = 1.0
    out = background_outside(probs, mask)
    assert np.array_equal((out.argmax(0) > 0).numpy(), mask)
    assert torch.allclose(out.sum(0), torch.ones(labels.shape))
