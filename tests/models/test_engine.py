"""The inference engine with the shipped demo bundle on a small synthetic subject.

The subject comes from the physics-based synthetic engine (seed 9100, not a training seed)
on a 3 mm grid to keep the test fast; the bundle is the shipped demonstration model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.bundle import load_bundle
from models.engine import InferenceEngine, get_engine
from training.regions import dice

SEQS = ["T1", "T1C", "T2", "FLAIR"]


@pytest.fixture(scope="module")
def subject() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    torch.set_num_threads(2)
    from training.synth import generate_subject

    s = generate_subject(9100, voxel_mm=3.0, tumour=True)
    labels = np.asarray(s.labels)
    # A 108 mm box around the tumour keeps the model grid to one 64³ window (a quick test).
    centre = np.round(np.argwhere(labels > 0).mean(axis=0)).astype(int)
    lo = np.clip(centre - 18, 0, np.array(labels.shape) - 36)
    box = tuple(slice(int(a), int(a) + 36) for a in lo)
    affine = np.asarray(s.affine).copy()
    affine[:3, 3] = (affine @ np.array([*lo, 1.0]))[:3]
    images = {str(k.value if hasattr(k, "value") else k): np.asarray(v, dtype=np.float32)[box] for k, v in s.images.items()}
    return images, labels[box], affine


@pytest.fixture(scope="module")
def engine() -> InferenceEngine:
    return InferenceEngine(load_bundle("brain-tumour-demo"), device="cpu", threads=2)


@pytest.mark.parametrize("subset", [SEQS, ["FLAIR"], ["T1"], ["T1C", "T2"]])
def test_any_sequence_subset_gives_labels_on_the_reference_grid(engine, subject, subset) -> None:
    images, labels, affine = subject
    pred = engine.predict({k: images[k] for k in subset}, affine)
    assert pred.labels.shape == labels.shape
    assert pred.labels.dtype == np.uint8
    assert set(np.unique(pred.labels)) <= {0, 1, 2, 3}
    assert pred.channels_used == [c for c in engine.channels if c in subset]
    if "FLAIR" in subset:
        # a trained model, not noise: the whole tumour is found from FLAIR-containing subsets
        assert dice(pred.labels > 0, labels > 0) > 0.6


def test_storage_order_does_not_change_the_result(engine, subject) -> None:
    """The same images stored flipped and transposed (affine adjusted) give the same labels."""
    images, _, affine = subject
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = next(iter(images.values())).shape[0] - 1
    perm = np.eye(4)[[2, 0, 1, 3]].T  # new (a, b, c) = old (k, i, j)
    new_affine = affine @ flip @ perm
    moved = {k: np.ascontiguousarray(np.transpose(v[::-1], (2, 0, 1))) for k, v in images.items()}
    a = engine.predict(images, affine).labels
    b = engine.predict(moved, new_affine).labels
    back = np.transpose(b, (1, 2, 0))[::-1]
    assert np.mean(a == back) > 0.995


def test_no_usable_sequence_is_a_clear_error(engine, subject) -> None:
    images, _, affine = subject
    with pytest.raises(ValueError, match="needs at least one of T1, T1C, T2, FLAIR"):
        engine.predict({"DWI": images["T1"]}, affine)


def test_warm_engine_is_reused() -> None:
    assert get_engine("brain-tumour-demo", device="cpu") is get_engine("brain-tumour-demo", device="cpu")


def test_decision_rules_differ_only_where_tumour_kind_is_uncertain() -> None:
    import torch

    from models.engine import decide_labels

    # voxel 0: surely background; 1: tumour of an uncertain kind (0.3 + 0.3 > 0.4); 2: clearly label 2;
    # 3: outside the model grid (all zero)
    probs = torch.tensor([[0.9, 0.4, 0.1, 0.0], [0.05, 0.3, 0.1, 0.0], [0.05, 0.3, 0.8, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert decide_labels(probs, "argmax").tolist() == [0, 0, 2, 0]
    assert decide_labels(probs, "foreground_first").tolist() == [0, 1, 2, 0]
    with pytest.raises(ValueError, match=r"preprocessing\.decision"):
        decide_labels(probs, "vote")


def test_argmax_classes_matches_torch_argmax_including_ties() -> None:
    from models.engine import argmax_classes

    gen = torch.Generator().manual_seed(3)
    probs = torch.rand(5, 7, 6, 4, generator=gen)
    probs = torch.round(probs * 4) / 4  # many ties: the first class must win them, as torch.argmax does
    got = argmax_classes(probs)
    assert got.dtype == torch.uint8
    assert torch.equal(got.long(), torch.argmax(probs, dim=0))


def test_volumes_on_their_own_grids_match_the_resampled_path(engine, subject) -> None:
    """One sequence given on a coarser grid of its own (its affine beside it) is resampled once, straight
    onto the model grid: the model input matches what the same data on the reference grid gives."""
    images, _, affine = subject
    ref = images["T1"]
    # T2 on every second voxel in i and j (a grid of its own: twice the spacing, same origin)
    coarse = images["T2"][::2, ::2, :]
    coarse_affine = affine @ np.diag([2.0, 2.0, 1.0, 1.0])
    same = {"T1": ref, "T2": images["T2"]}
    x_ref, grid_ref, _ = engine.prepare(same, affine)
    x_own, grid_own, present = engine.prepare({"T1": ref, "T2": coarse}, affine,
                                              affines={"T1": affine, "T2": coarse_affine}, shape=ref.shape)
    assert present == ["T1", "T2"] and np.allclose(grid_ref, grid_own)
    t1, t2 = engine.channels.index("T1"), engine.channels.index("T2")
    assert torch.equal(x_ref[t1], x_own[t1])  # the reference series itself: the same input
    # the coarse T2 differs only by the detail it lost, not by a shift or flip
    a, b = x_ref[t2].numpy().ravel(), x_own[t2].numpy().ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.9
    shifted = np.roll(x_own[t2].numpy(), 3, axis=0).ravel()
    assert np.corrcoef(a, shifted)[0, 1] < np.corrcoef(a, b)[0, 1] - 0.05
    # shapes differ without affines: refused, as before
    with pytest.raises(ValueError, match="not the reference grid"):
        engine.prepare({"T1": ref, "T2": coarse}, affine)


class _Voxelwise(torch.nn.Module):
    """A network that is a function of each voxel alone, so shifting its input shifts its output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.arange(1, x.shape[1] + 1, dtype=x.dtype).view(1, -1, 1, 1, 1)


def test_shifted_tilings_are_cropped_back_where_they_belong() -> None:
    """``preprocessing.shift_average``: each shifted output is cropped back onto the unshifted grid.

    With a voxel-wise network every shifted tiling gives the unshifted output, so the average
    equals one pass; an output cropped on the wrong side is moved by its shift and differs.
    """
    eng = InferenceEngine(load_bundle("brain-tumour-demo"), device="cpu", threads=2)
    eng.net = _Voxelwise()
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(4, 20, 22, 24)).astype(np.float32))
    eng.shifts = [0]
    one = eng.probabilities(x)
    eng.shifts = [0, 3, 5]
    averaged = eng.probabilities(x)
    assert averaged.shape == one.shape == (4, 20, 22, 24)
    assert torch.allclose(averaged, one, atol=1e-6)


def test_shifted_tilings_change_the_demo_network_little(engine, subject) -> None:
    """The demo network is not shift-equivariant: a shifted tiling changes its probabilities, a little."""
    images, _, affine = subject
    x, _, _ = engine.prepare({k: images[k] for k in SEQS}, affine)
    plain = engine.probabilities(x)
    saved = engine.shifts
    try:
        engine.shifts = [7]
        shifted = engine.probabilities(x)
    finally:
        engine.shifts = saved
    diff = (plain - shifted).abs()
    assert float(diff.max()) > 1e-3  # the shift was applied
    assert float(diff.mean()) < 0.05  # and the output stayed on the same grid


@pytest.mark.parametrize("value", [[], [0, 0], [-1], [0.5], "0,4", [True], [65]])
def test_a_bad_shift_average_is_a_sentence_naming_the_key(value) -> None:
    from models.bundle import BundleError
    from models.engine import shift_average

    with pytest.raises(BundleError, match=r"preprocessing\.shift_average"):
        shift_average("x", value)
