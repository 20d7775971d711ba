"""Domain randomisation transforms (training.datasets): shapes kept, label untouched, seeded, doing what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.preprocess import normalize
from training.datasets import (
    DR_DEFAULTS,
    NormalizeFromSampled,
    RandBackgroundd,
    RandBiasFieldChanneld,
    RandFieldOfViewd,
    RandGreyMatterGaind,
    RandIntensityRemapd,
    RandNoiseFloord,
    RandThickSlicesd,
    _positive_samples,
    domain_randomisation_transforms,
    train_transforms,
)
from training.ft_config import parse_finetune_config


def _head(shape: tuple[int, int, int] = (40, 44, 36), seed: int = 0) -> dict:
    """A raw-intensity 'head': ellipsoid tissue with a bright blob of tumour, noisy background; channel 2 absent."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt((grid ** 2).sum(0))
    head = r < 0.8
    img = np.zeros((4, *shape), dtype=np.float32)
    for c, (lo, hi) in enumerate([(300, 600), (250, 700), (0, 0), (200, 500)]):
        if c == 2:
            continue
        img[c] = np.where(head, lo + (hi - lo) * (1 - r), 0) + rng.rayleigh(8.0, shape)
    label = np.zeros((1, *shape), dtype=np.float32)
    label[0][(np.abs(grid[0] - 0.3) < 0.15) & (np.abs(grid[1]) < 0.15) & (np.abs(grid[2]) < 0.15)] = 2
    present = np.array([True, True, False, True])
    gm = np.where(head & (r > 0.6), 255, 0).astype(np.uint8)[None]  # an outer shell of 'cortex'
    s_in, s_out, s_gm = _positive_samples(img, present, head, 4000, seed=1, gm=gm)
    return {"image": img, "label": label, "head": head[None].astype(np.uint8), "present": present,
            "sample_in": s_in, "sample_out": s_out, "gm": gm, "sample_gm": s_gm}


ALL_STEPS = [
    RandGreyMatterGaind("image", prob=1.0),
    RandIntensityRemapd("image", prob=1.0, clip_prob=1.0, quantise_prob=1.0),
    RandBiasFieldChanneld("image", prob=1.0),
    RandThickSlicesd("image", prob=1.0),
    RandNoiseFloord("image", prob=1.0),
    RandBackgroundd("image", prob=1.0),
    RandFieldOfViewd("image", prob=1.0, fraction=(0.6, 0.6)),
]


@pytest.mark.parametrize("step", ALL_STEPS, ids=lambda s: type(s).__name__)
def test_each_step_keeps_shapes_and_label_and_absent_channels(step) -> None:
    d = _head()
    label = d["label"].copy()
    step.set_random_state(3)
    out = step(d)
    assert out["image"].shape == (4, 40, 44, 36)
    assert np.array_equal(np.asarray(out["label"]), label)
    assert not np.any(np.asarray(out["image"])[2]), "an absent channel must stay zero"


@pytest.mark.parametrize("step", ALL_STEPS, ids=lambda s: type(s).__name__)
def test_each_step_is_reproducible_with_a_seed(step) -> None:
    a = step.set_random_state(11)(_head())
    b = step.set_random_state(11)(_head())
    assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))


def test_remap_is_monotonic_and_keeps_zero() -> None:
    d = _head()
    x = d["image"][0].copy()
    x[0, 0, 0] = 0.0
    d["image"][0] = x
    out = RandIntensityRemapd("image", prob=1.0, clip_prob=0.0, quantise_prob=0.0).set_random_state(5)(d)
    y = np.asarray(out["image"])[0]
    order = np.argsort(x.ravel())
    assert np.all(np.diff(y.ravel()[order]) >= -1e-3), "a remap must never invert the contrast order"
    assert y[0, 0, 0] == 0.0
    assert not np.allclose(y, x), "the curve should change the intensities"
    # the samples follow the same curve, so the head's statistics follow the crop's
    assert not np.allclose(out["sample_in"][0], _head()["sample_in"][0])


def test_quantise_leaves_at_most_256_levels() -> None:
    d = _head()
    out = RandIntensityRemapd("image", prob=0.0, clip_prob=0.0, quantise_prob=1.0).set_random_state(0)(d)
    assert len(np.unique(np.asarray(out["image"])[0])) <= 256


def test_background_is_exactly_zero_outside_the_head() -> None:
    d = _head()
    out = RandBackgroundd("image", prob=1.0).set_random_state(0)(d)
    img = np.asarray(out["image"])
    assert np.all(img[:, 0, 0, 0] == 0) and np.all(img[:, -1, -1, -1] == 0)
    assert np.all(img[0][d["head"][0] > 0] > 0), "the head itself is kept"
    assert not np.any(out["sample_out"])


def test_field_of_view_cut_never_covers_tumour() -> None:
    for seed in range(10):
        d = _head()
        out = RandFieldOfViewd("image", prob=1.0, fraction=(0.9, 0.9)).set_random_state(seed)(d)
        img = np.asarray(out["image"])
        assert np.all(img[0][d["label"][0] > 0] > 0)
        assert np.count_nonzero(img[0] == 0) > 0


def test_thick_slices_blur_along_one_axis_only() -> None:
    d = _head()
    d["image"][0] = 0
    d["image"][0][:, :, ::2] = 100.0  # stripes along k
    d["image"][0][:, :, 1::2] = 50.0
    step = RandThickSlicesd("image", prob=1.0, factor=(2, 2))
    for seed in range(20):
        out = step.set_random_state(seed)(_copy(d))
        y = np.asarray(out["image"])[0]
        if np.ptp(y[5, 5, 4:30]) < 1.0:  # stripes across k averaged away: k was the axis
            return
    pytest.fail("thick slices along k never averaged the k stripes away in 20 draws")


def _copy(d: dict) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def test_normalisation_from_samples_matches_the_engines_on_an_untouched_head() -> None:
    d = _head()
    expected = normalize(d["image"], list(d["present"]), "zscore_per_channel")
    out = NormalizeFromSampled("image")(_copy(d))
    got = np.asarray(out["image"])
    head = d["head"][0] > 0
    for c in (0, 1, 3):
        assert np.abs(got[c][head] - expected[c][head]).mean() < 0.1
    assert not np.any(got[2])
    assert "sample_in" not in out and "sample_out" not in out


def test_bias_field_keeps_the_geometric_mean() -> None:
    d = _head()
    before = d["image"][0].copy()
    out = RandBiasFieldChanneld("image", prob=1.0, coeff=0.4).set_random_state(2)(d)
    ratio = np.asarray(out["image"])[0][before > 50] / before[before > 50]
    assert abs(np.exp(np.log(ratio).mean()) - 1.0) < 0.15
    assert ratio.std() > 0.01


def test_train_transforms_with_domain_randomisation_give_normalised_crops() -> None:
    d = _head((48, 48, 48))
    d["id"] = "x"
    tr = train_transforms([32, 32, 32], 0.0, 1, (1, 1), domain_randomisation={})
    tr.set_random_state(0)
    out = tr(d)[0]
    assert tuple(out["image"].shape) == (4, 32, 32, 32) and tuple(out["label"].shape) == (1, 32, 32, 32)
    img = out["image"].as_tensor() if hasattr(out["image"], "as_tensor") else torch.as_tensor(out["image"])
    # clipped at ±6 SD by the normalisation, then RandScaleIntensityd (±10 %) and RandShiftIntensityd (±0.1)
    assert float(img.abs().max()) <= 6.0 * 1.1 + 0.1 + 1e-4
    assert set(out) == {"id", "image", "label", "present"}  # the tissue fractions are gone too


def test_config_key_parses_and_refuses_unknown_options() -> None:
    base = {"network": {"encoder": {"name": "swin3d"}}, "preprocessing": {"normalize": "zscore_per_channel"}}
    cfg = parse_finetune_config({**base, "train": {"domain_randomisation": {"enabled": True, "bias_prob": 0.2}}})
    assert cfg.domain_randomisation == {"bias_prob": 0.2}
    assert parse_finetune_config({**base, "train": {"domain_randomisation": True}}).domain_randomisation == {}
    assert parse_finetune_config(base).domain_randomisation is None
    with pytest.raises(ValueError, match=r"'train\.domain_randomisation\.bias_prb': unknown key \(did you mean 'bias_prob'\?\)"):
        parse_finetune_config({**base, "train": {"domain_randomisation": {"bias_prb": 0.2}}})
    with pytest.raises(ValueError, match="zscore_per_channel"):
        parse_finetune_config({"network": base["network"], "train": {"domain_randomisation": True}})
    assert set(DR_DEFAULTS) >= {"remap_prob", "zero_background_prob", "fov_prob"}
    assert len(domain_randomisation_transforms()) == 8


def test_grey_matter_gain_scales_grey_matter_and_its_samples_alike() -> None:
    """Only grey-matter voxels (and the head samples taken on them) change, each present channel by its own gain."""
    d = _head()
    before, s_before = d["image"].copy(), d["sample_in"].copy()
    gm, s_gm = d["gm"][0] > 0, d["sample_gm"] > 0
    out = RandGreyMatterGaind("image", prob=1.0, gain=(1.3, 1.6)).set_random_state(5)(d)
    assert "gm" not in out and "sample_gm" not in out
    gains = []
    for c in (0, 1, 3):
        ratio = np.asarray(out["image"])[c][gm & (before[c] > 0)] / before[c][gm & (before[c] > 0)]
        assert np.allclose(ratio, ratio[0], rtol=1e-5) and 1.3 <= ratio[0] <= 1.6
        assert np.array_equal(np.asarray(out["image"])[c][~gm], before[c][~gm])
        assert np.allclose(out["sample_in"][c][s_gm[c]] / s_before[c][s_gm[c]], ratio[0], rtol=1e-5)
        assert np.array_equal(out["sample_in"][c][~s_gm[c]], s_before[c][~s_gm[c]])
        gains.append(float(ratio[0]))
    assert len(set(gains)) == 3  # drawn per channel
    untouched = RandGreyMatterGaind("image", prob=0.0)(_head())
    assert np.array_equal(np.asarray(untouched["image"]), _head()["image"]) and "gm" not in untouched


def test_silent_subsets_clear_the_label_only_for_those_subsets() -> None:
    from training.datasets import SequenceDropoutd

    step = SequenceDropoutd("image", prob=1.0, weights={(0,): 1.0, (0, 1): 1.0, (0, 1, 3): 0.0, (0, 3): 0.0,
                                                         (1,): 0.0, (1, 3): 0.0, (3,): 0.0},
                            silent_subsets=[(0,)])
    seen = set()
    for seed in range(30):
        d = _head()
        out = step.set_random_state(seed)(d)
        kept = tuple(int(i) for i in np.flatnonzero(out["present"]))
        seen.add(kept)
        if kept == (0,):
            assert not np.any(out["label"]), "T1 alone is a silent subset: its label must be background"
        else:
            assert np.any(out["label"]), "other subsets keep their tumour"
    assert seen == {(0,), (0, 1)}
    cfg = parse_finetune_config({"network": {"encoder": {"name": "swin3d"}}, "train": {"silent_subsets": ["T1", "T1C+T2"]}})
    assert cfg.silent_subsets == [(0,), (1, 2)]
    with pytest.raises(ValueError, match=r"silent_subsets' names T3"):
        parse_finetune_config({"network": {"encoder": {"name": "swin3d"}}, "train": {"silent_subsets": ["T3"]}})
