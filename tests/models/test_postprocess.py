"""Component rules after the decision (``models.postprocess``) and the engine's use of the card key."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from models.bundle import BundleError, load_bundle
from models.engine import InferenceEngine
from models.postprocess import drop_small_components, drop_unconfident_components, min_component_peak


def _two_blobs() -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((20, 20, 20), np.uint8)
    prob = np.zeros(labels.shape, np.float32)
    labels[2:8, 2:8, 2:8] = 2            # a tumour: oedema round a sure core
    labels[4:6, 4:6, 4:6] = 3
    prob[2:8, 2:8, 2:8] = 0.6
    prob[4:6, 4:6, 4:6] = 0.99
    labels[12:18, 12:18, 12:18] = 2      # a lukewarm patch, larger than the tumour's core
    prob[12:18, 12:18, 12:18] = 0.7
    prob[15, 15, 15] = 0.9
    return labels, prob


def test_a_component_unsure_everywhere_is_dropped_whole_and_a_sure_one_kept_with_its_rim() -> None:
    labels, prob = _two_blobs()
    out = drop_unconfident_components(labels, prob, 0.95)
    assert out.dtype == labels.dtype
    assert (out[2:8, 2:8, 2:8] == labels[2:8, 2:8, 2:8]).all()   # the rim (0.6) stays with its core
    assert not out[10:].any()
    assert labels[12:18, 12:18, 12:18].all()                      # the input is not changed


@pytest.mark.parametrize("min_peak", [0.0, 0.5, 0.9])
def test_components_at_or_over_the_peak_are_kept(min_peak) -> None:
    labels, prob = _two_blobs()
    assert (drop_unconfident_components(labels, prob, min_peak) == labels).all()


def test_touching_labels_are_one_component() -> None:
    """Foreground components are of every label together, 26-connected (a corner touch joins)."""
    labels = np.zeros((6, 6, 6), np.uint8)
    prob = np.zeros(labels.shape, np.float32)
    labels[1, 1, 1], prob[1, 1, 1] = 1, 0.99
    labels[2, 2, 2], prob[2, 2, 2] = 2, 0.6
    assert (drop_unconfident_components(labels, prob, 0.95) == labels).all()
    assert ndimage.label(labels > 0, structure=np.ones((3, 3, 3)))[1] == 1


def test_the_study_scope_empties_a_head_sure_of_nothing_and_keeps_a_sure_one_whole() -> None:
    labels, prob = _two_blobs()
    assert (drop_unconfident_components(labels, prob, 0.95, "study") == labels).all()   # the lukewarm patch stays
    unsure = np.where(prob > 0.95, 0.9, prob).astype(np.float32)
    assert not drop_unconfident_components(labels, unsure, 0.95, "study").any()
    assert (drop_unconfident_components(labels, unsure, 0.0, "study") == labels).all()
    with pytest.raises(ValueError, match="scope 'head'"):
        drop_unconfident_components(labels, prob, 0.95, "head")


def test_shapes_must_agree() -> None:
    labels, prob = _two_blobs()
    with pytest.raises(ValueError, match="differ in shape"):
        drop_unconfident_components(labels, prob[1:], 0.9)


def test_small_components_rule_is_unchanged() -> None:
    labels, _ = _two_blobs()
    labels[0, 19, 0] = 1
    out = drop_small_components(labels, 0.2)
    assert out[0, 19, 0] == 0 and (out[2:8, 2:8, 2:8] == labels[2:8, 2:8, 2:8]).all()


@pytest.mark.parametrize("value", [1.0, -0.1, 2, True, "0.9", None])
def test_a_bad_min_component_peak_is_a_sentence_naming_the_key(value) -> None:
    with pytest.raises(BundleError, match=r"preprocessing\.min_component_peak"):
        min_component_peak("x", value)


@pytest.mark.parametrize(("key", "value"), [("min_component_peak", 1.5), ("min_component_peak_scope", "head")])
def test_the_engine_refuses_a_bad_card_value_before_it_serves(key, value) -> None:
    bundle = load_bundle("brain-tumour-demo")
    bundle.card.preprocessing[key] = value
    with pytest.raises(BundleError, match=rf"'brain-tumour-demo'.*{key} {value!r}"):
        InferenceEngine(bundle, device="cpu", threads=1)


def test_the_engine_drops_whole_components_by_the_card() -> None:
    """Through ``predict``: a rule of 0.5 changes nothing under argmax (a foreground voxel has
    foreground probability > 0.5); a rule near 1 leaves only whole components of the plain result,
    exactly those the rule keeps on the probabilities ``keep_probability`` returns."""
    from training.synth import generate_subject

    s = generate_subject(9101, voxel_mm=4.0, tumour=True)
    images = {str(getattr(k, "value", k)): np.asarray(v, np.float32) for k, v in s.images.items()}
    affine = np.asarray(s.affine)
    engine = InferenceEngine(load_bundle("brain-tumour-demo"), device="cpu", threads=2)
    flair = {"FLAIR": images["FLAIR"]}
    engine.min_peak, engine.peak_scope = 0.0, "component"
    first = engine.predict(flair, affine, keep_probability=True)
    plain, prob = first.labels, first.foreground_probability
    assert plain.any() and prob is not None and prob.shape == plain.shape
    assert first.before_peak_rule is not None and (first.before_peak_rule == plain).all()
    engine.min_peak = 0.5
    assert (engine.predict(flair, affine).labels == plain).all()
    engine.min_peak = 0.9999
    strict = engine.predict(flair, affine)
    assert strict.foreground_probability is None          # kept only when asked
    comp, _ = ndimage.label(plain > 0, structure=np.ones((3, 3, 3)))
    kept = set(np.unique(comp[strict.labels > 0])) - {0}
    assert (strict.labels > 0).sum() < (plain > 0).sum()
    for c in kept:                       # kept components are whole and keep their labels
        assert (strict.labels[comp == c] == plain[comp == c]).all()
    assert not strict.labels[~np.isin(comp, list(kept))].any()
    assert (strict.labels == drop_unconfident_components(plain, prob, 0.9999)).all()
