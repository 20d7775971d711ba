"""Bias-field correction (``models.bias``, ITK's N4) and the card option that turns it on.

The phantom is three flat "tissues" inside an ellipsoid, multiplied by a smooth field of
±25 % (a receive coil's shading), with a little noise: N4 must take most of the shading out
and leave a flat image flat.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.bias import N4Cache, fit_mask, n4_correct
from models.bundle import BundleError, load_bundle
from models.engine import InferenceEngine


def _phantom(shape: tuple[int, int, int] = (48, 56, 44)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat image, shading field, tissue map) of an ellipsoidal head with three tissues."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt(((grid / np.array([0.85, 0.9, 0.8])[:, None, None, None]) ** 2).sum(axis=0))
    tissue = np.zeros(shape, dtype=np.int16)
    tissue[r < 0.95] = 1
    tissue[r < 0.75] = 2
    tissue[(r < 0.75) & (np.sin(6 * grid[0]) * np.cos(5 * grid[1]) > 0.3)] = 3
    flat = np.choose(tissue, [0.0, 300.0, 700.0, 1000.0]).astype(np.float32)
    field = (1.0 + 0.25 * (0.7 * grid[0] + 0.5 * grid[1] - 0.5 * grid[2] ** 2)).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 5, shape).astype(np.float32)
    return flat + noise, field, tissue


def _spread(image: np.ndarray, tissue: np.ndarray) -> float:
    """Mean coefficient of variation of the image within each tissue."""
    return float(np.mean([image[tissue == t].std() / image[tissue == t].mean() for t in (1, 2, 3)]))


def test_n4_takes_most_of_a_smooth_shading_out() -> None:
    flat, field, tissue = _phantom()
    shaded = flat * field
    corrected = n4_correct(shaded, [2.0, 2.0, 2.0])
    assert corrected.shape == shaded.shape and corrected.dtype == np.float32
    assert _spread(shaded, tissue) > 3 * _spread(flat, tissue)  # the shading is what makes the spread
    assert _spread(corrected, tissue) < 0.4 * _spread(shaded, tissue)
    # contrast between tissues is kept (N4 removes a smooth field, not edges)
    means = [float(corrected[tissue == t].mean()) for t in (1, 2, 3)]
    assert means[0] < means[1] < means[2]


def test_n4_leaves_a_flat_image_flat_and_an_empty_one_alone() -> None:
    flat, _, tissue = _phantom()
    corrected = n4_correct(flat, [2.0, 2.0, 2.0])
    assert _spread(corrected, tissue) < 1.5 * _spread(flat, tissue)
    empty = np.zeros((8, 8, 8), dtype=np.float32)
    assert np.array_equal(n4_correct(empty, [2.0, 2.0, 2.0]), empty)


def test_a_large_bright_lesion_is_left_out_of_the_fit_and_keeps_its_contrast() -> None:
    """Oedema brighter than the rest of the head must not bend the field (it would be flattened away)."""
    flat, field, tissue = _phantom()
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in flat.shape], indexing="ij"))
    lesion = (((grid - np.array([30, 34, 24])[:, None, None, None]) ** 2).sum(axis=0) < 9**2) & (tissue >= 2)
    image = np.where(lesion, 1600.0, flat).astype(np.float32)
    mask = fit_mask(image * field)
    assert not mask[lesion].any() and mask[(tissue >= 2) & ~lesion].mean() > 0.8
    corrected = n4_correct(image * field, [2.0, 2.0, 2.0])
    wm = (tissue == 3) & ~lesion
    true_contrast = 1600.0 / 1000.0
    contrast = float(np.median(corrected[lesion]) / np.median(corrected[wm]))
    assert abs(contrast - true_contrast) < 0.1 * true_contrast, contrast


def _engine_with(preprocessing: dict) -> InferenceEngine:
    bundle = load_bundle("brain-tumour-demo")
    card = dataclasses.replace(bundle.card, preprocessing={**bundle.card.preprocessing, **preprocessing})
    return InferenceEngine(dataclasses.replace(bundle, card=card), device="cpu", threads=2)


def test_the_card_option_corrects_every_channel_before_normalising() -> None:
    flat, field, _ = _phantom((40, 44, 36))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    every = {"bias_correction": "n4", "bias_correction_channels": ["T1", "T1C", "T2", "FLAIR"]}
    plain, n4 = _engine_with({"bias_correction": "none"}), _engine_with(every)
    assert plain.bias_correction == "none" and n4.bias_correction == "n4"
    for engine in (plain, n4):
        x_flat = engine.prepare({"FLAIR": flat, "T1": flat}, affine)[0].numpy()
        x_shaded = engine.prepare({"FLAIR": flat * field, "T1": flat * field}, affine)[0].numpy()
        err = {c: float(np.abs(x_shaded[c] - x_flat[c])[flat > 0].mean()) for c in (0, 3)}
        if engine is plain:
            before = err
        else:
            after = err
    for c in (0, 3):
        assert after[c] < 0.5 * before[c], (before, after)


@pytest.mark.parametrize("value", ["N4", "yes", "ants"])
def test_a_bad_bias_correction_is_a_sentence_naming_the_key(value: str) -> None:
    with pytest.raises(BundleError, match=r"preprocessing\.bias_correction"):
        _engine_with({"bias_correction": value})


def test_the_shipped_tumour_model_corrects_the_bias_field() -> None:
    """0.5.0 chose N4 on its selection set (FLAIR-alone false tumour), 0.5.1 kept it to FLAIR (TC and ET with
    all four); the card must keep both."""
    engine = InferenceEngine(load_bundle("brain-tumour-demo"), device="cpu", threads=2)
    assert engine.bias_correction == "n4" and engine.bias_channels == ["FLAIR"]


def test_the_cache_fits_a_volume_once_and_gives_what_n4_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.bias as bias

    shaded = (_phantom((32, 36, 30))[0] * _phantom((32, 36, 30))[1]).astype(np.float32)
    other = shaded * 1.5
    fits: list[int] = []

    def counted(volume: np.ndarray, spacing: list[float]) -> np.ndarray:
        fits.append(1)
        return n4_correct(volume, spacing)

    monkeypatch.setattr(bias, "n4_correct", counted)
    cache = N4Cache(size=1)
    first = cache.correct(shaded, [2.0, 2.0, 2.0])
    first[0, 0, 0] = -1.0  # a caller writing into its copy must not change what the cache keeps
    again = cache.correct(shaded.copy(), [2.0, 2.0, 2.0])
    assert len(fits) == 1 and cache.hits == 1
    assert np.array_equal(again, n4_correct(shaded, [2.0, 2.0, 2.0]))
    cache.correct(shaded, [1.0, 2.0, 2.0])  # another spacing is another fit
    cache.correct(other, [2.0, 2.0, 2.0])  # another volume too; size 1 drops the oldest
    cache.correct(shaded, [1.0, 2.0, 2.0])
    assert len(fits) == 4


def test_bias_correction_channels_limits_n4_to_the_sequences_named() -> None:
    flat, field, _ = _phantom((40, 44, 36))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    plain = _engine_with({"bias_correction": "none"})
    flair_only = _engine_with({"bias_correction": "n4", "bias_correction_channels": ["FLAIR"]})
    images = {"FLAIR": flat * field, "T1": flat * field}
    x_plain, x_flair = (e.prepare(images, affine)[0].numpy() for e in (plain, flair_only))
    t1, flair = plain.channels.index("T1"), plain.channels.index("FLAIR")
    assert np.array_equal(x_flair[t1], x_plain[t1])  # T1 as it came
    assert not np.allclose(x_flair[flair], x_plain[flair], atol=1e-3)  # FLAIR corrected


def test_bias_correction_channels_naming_an_unknown_sequence_is_a_sentence_naming_the_key() -> None:
    with pytest.raises(BundleError, match=r"preprocessing\.bias_correction_channels .*DWI"):
        _engine_with({"bias_correction": "n4", "bias_correction_channels": ["FLAIR", "DWI"]})
