"""Training sees what inference sees: N4 on the card's sequences in the training loader too.

The engine divides the sequences of the card's ``preprocessing.bias_correction_channels`` by
their N4 field on the model grid (``models.engine.InferenceEngine.prepare``); a fine-tuning run
with ``[preprocessing] bias_correction_channels`` must give its network the same input, and the
bundle it writes must tell the engine to do it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from models.bundle import load_bundle
from models.engine import InferenceEngine
from training.datasets import LoadSubjectd
from training.export import _trained_bias_correction
from training.ft_config import parse_finetune_config


def _shaded_head(shape: tuple[int, int, int] = (40, 44, 36)) -> np.ndarray:
    """An ellipsoidal two-tissue head under a ±25 % smooth shading."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt(((grid / np.array([0.85, 0.9, 0.8])[:, None, None, None]) ** 2).sum(axis=0))
    flat = np.where(r < 0.95, 300.0, 0.0) + np.where(r < 0.7, 400.0, 0.0)
    field = 1.0 + 0.25 * (0.7 * grid[0] + 0.5 * grid[1] - 0.5 * grid[2] ** 2)
    noise = np.random.default_rng(1).normal(0, 5, shape)
    return (flat * field + noise).astype(np.float32)


def test_the_loader_corrects_the_named_sequences_as_the_engine_does(tmp_path: Path) -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    image = _shaded_head()
    paths = {}
    for name in ("T1", "FLAIR"):
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(image, affine), paths[name])
    item: dict[Hashable, Any] = {"id": "phantom", "sequences": paths, "all_background": True}
    channels = ["T1", "T1C", "T2", "FLAIR"]
    bundle = load_bundle("brain-tumour-demo")
    card = dataclasses.replace(bundle.card, preprocessing={**bundle.card.preprocessing, "bias_correction": "n4",
                                                           "bias_correction_channels": ["FLAIR"]})
    engine = InferenceEngine(dataclasses.replace(bundle, card=card), device="cpu", threads=2)
    served = engine.prepare({"T1": image, "FLAIR": image}, affine)[0].numpy()

    trained = LoadSubjectd(channels, [2.0, 2.0, 2.0], "zscore_per_channel", bias_channels=["FLAIR"])(item)["image"]
    plain = LoadSubjectd(channels, [2.0, 2.0, 2.0], "zscore_per_channel")(item)["image"]
    t1, flair = channels.index("T1"), channels.index("FLAIR")
    assert trained.shape == served.shape
    np.testing.assert_allclose(trained[flair], served[flair], atol=1e-4)  # FLAIR corrected as at inference
    np.testing.assert_allclose(trained[t1], served[t1], atol=1e-4)  # T1 as it came, as at inference
    assert np.array_equal(trained[t1], plain[t1])
    assert not np.allclose(trained[flair], plain[flair], atol=1e-2)  # and the correction did something


def _config(extra: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(f"""
[network.encoder]
name = "swin3d"
[preprocessing]
channels = ["T1", "FLAIR"]
{extra}
""")


def test_the_config_key_names_only_channels_and_the_bundle_says_n4() -> None:
    cfg = parse_finetune_config(_config('bias_correction_channels = ["FLAIR"]'))
    assert cfg.bias_correction_channels == ["FLAIR"]
    assert _trained_bias_correction(cfg) == {"bias_correction": "n4", "bias_correction_channels": ["FLAIR"]}
    assert _trained_bias_correction(parse_finetune_config(_config(""))) == {}
    with pytest.raises(ValueError, match=r"preprocessing\.bias_correction_channels' names T2"):
        parse_finetune_config(_config('bias_correction_channels = ["FLAIR", "T2"]'))

