"""Slice positions that jitter by rounding (GE oblique stacks) are read; real gaps are not.

GE writes ImagePositionPatient rounded, so the steps of an oblique 7 mm stack read 6.96 to
7.07 mm. dcm2niix converts such a series (it warns only when a step differs from the first by
more than 0.2 mm); the reader must too, with a logged note, and must still refuse uneven
spacing, missing slices, duplicates and gantry tilt with the sentences it always used.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicom_node.io.reader import SeriesReadError, read_series
from dicom_node.io.volume import Volume
from tests.io.series_factory import Truth, make_series
from tests.io.test_dcm2niix import assert_same_space, dcm2niix

#: 20 slices, 7 mm apart, angulated about two axes (17 degrees about z, -11 about x).
SHAPE = (32, 28, 20)
SPACING = (0.9, 0.9, 7.0)
ORIGIN = (-101.234567, 87.654321, -43.21987)
LOGGER = "dicom_node.io.geometry"

needs_dcm2niix = pytest.mark.skipif(
    shutil.which("dcm2niix") is None, reason="dcm2niix (Debian package) not installed"
)


def jittered_series(
    folder: Path,
    *,
    decimals: int | None,
    jitter_mm: float = 0.0,
    seed: int = 7,
    drop_slice: int | None = None,
    tilt_mm: float = 0.0,
    shape: tuple[int, int, int] = SHAPE,
) -> tuple[list[Path], Truth]:
    """An oblique series whose ImagePositionPatient values are jittered and/or rounded.

    Parameters
    ----------
    folder : Path
        Where the files go.
    decimals : int or None
        Round every coordinate to this many decimals (GE writes such values); ``None`` keeps them.
    jitter_mm : float
        Add a uniform random offset in ``[-jitter_mm, jitter_mm]`` to every coordinate first.
    seed : int
        Seed of the jitter.
    drop_slice, tilt_mm, shape : optional
        Passed to :func:`make_series` (a gap; gantry tilt along the row direction; size).

    Returns
    -------
    paths, truth
        The files and the exact (un-jittered) geometry.
    """
    paths, truth = make_series(
        folder,
        orientation="oblique",
        shape=shape,
        spacing=SPACING,
        origin=ORIGIN,
        instance_order="against",
        drop_slice=drop_slice,
        tilt_mm=tilt_mm,
    )
    rng = np.random.default_rng(seed)
    for path in paths:
        ds = pydicom.dcmread(path)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        ipp = ipp + rng.uniform(-jitter_mm, jitter_mm, size=3)
        if decimals is not None:
            ipp = np.round(ipp, decimals)
        ds.ImagePositionPatient = [f"{v:.6f}".rstrip("0").rstrip(".") for v in ipp]
        ds.save_as(path)
    return paths, truth


def positions(paths: list[Path]) -> np.ndarray:
    """ImagePositionPatient of every file, in spatial order along the slice normal."""
    ipps = np.array([[float(v) for v in pydicom.dcmread(p).ImagePositionPatient] for p in paths])
    ds = pydicom.dcmread(paths[0])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    return ipps[np.argsort(ipps @ normal)]


def corner_error(affine: np.ndarray, truth: np.ndarray, shape: tuple[int, int, int]) -> float:
    """Largest distance (mm) between the voxel centres two affines give, over the 8 corners."""
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    return float(np.max(np.linalg.norm((corners @ affine.T - corners @ truth.T)[:, :3], axis=1)))


def read_with_note(paths: list[Path], caplog: pytest.LogCaptureFixture) -> tuple[Volume, list[str]]:
    """Read one volume and return the geometry module's log lines."""
    with caplog.at_level(logging.INFO, logger=LOGGER):
        (vol,) = read_series(paths)
    return vol, [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize(
    ("decimals", "jitter_mm", "noted"),
    [(1, 0.0, True), (2, 0.06, True), (2, 0.0, False)],
    ids=["round1", "jitter0.06", "round2"],
)
def test_rounded_oblique_positions_are_read_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, decimals: int, jitter_mm: float, noted: bool
) -> None:
    """Rounded to 0.1 mm, or jittered by 0.06 mm: steps vary by more than the exact-stack
    tolerance (0.07 mm at 7 mm) and a note is logged; rounded to 0.01 mm they do not."""
    paths, truth = jittered_series(tmp_path, decimals=decimals, jitter_mm=jitter_mm)
    steps = np.linalg.norm(np.diff(positions(paths), axis=0), axis=1)
    assert (steps.max() - steps.min() > 0.1) == noted, steps
    vol, notes = read_with_note(paths, caplog)
    assert vol.shape == SHAPE
    assert np.array_equal(vol.data, truth.data)
    assert len(notes) == int(noted)
    for note in notes:
        assert "slice positions jitter" in note and "least-squares" in note and "uid:" in note, note
        assert "Test^Io" not in note and "IO-TEST-1" not in note and truth.series_uid not in note
    # The least-squares fit stays within the jitter of the truth at every corner of the volume.
    assert corner_error(vol.affine, truth.affine, SHAPE) < 0.05
    np.testing.assert_allclose(np.linalg.norm(vol.affine[:3, 2]), SPACING[2], atol=0.005)


def test_short_rounded_stack_is_not_taken_for_gantry_tilt(tmp_path: Path) -> None:
    """Rounding moves the first and last slices in-plane too; over a short stack that drift
    exceeds the exact-stack shear tolerance (1e-3 of the span) but is not gantry tilt."""
    drift_beyond_exact_tolerance = 0
    for seed in range(4):
        shape = (SHAPE[0], SHAPE[1], 4)
        paths, truth = jittered_series(
            tmp_path / str(seed), decimals=1, jitter_mm=0.06, seed=seed, shape=shape
        )
        ipps = positions(paths)
        iop = [float(v) for v in pydicom.dcmread(paths[0]).ImageOrientationPatient]
        normal = np.cross(iop[:3], iop[3:])
        span = ipps[-1] - ipps[0]
        along = float(span @ normal)
        drift_beyond_exact_tolerance += np.linalg.norm(span - along * normal) > 1e-3 * along
        (vol,) = read_series(paths)
        assert corner_error(vol.affine, truth.affine, shape) < 0.15
    assert drift_beyond_exact_tolerance >= 2


def test_exact_positions_log_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths, truth = jittered_series(tmp_path, decimals=None)
    vol, notes = read_with_note(paths, caplog)
    assert notes == []
    np.testing.assert_allclose(vol.affine, truth.affine, atol=1e-6)


@needs_dcm2niix
@pytest.mark.parametrize(
    ("decimals", "jitter_mm"), [(1, 0.0), (2, 0.06), (2, 0.0)], ids=["round1", "jitter0.06", "round2"]
)
def test_jittered_series_against_dcm2niix(tmp_path: Path, decimals: int, jitter_mm: float) -> None:
    """dcm2niix takes its slice step from the first two slices; the reader fits all of them.

    dcm2niix converts these stacks into one file (no "Interslice distance varies"). The in-plane
    axes and voxels agree within 1e-3 mm; dcm2niix's slice column is the 3-D distance between
    the first two slices in InstanceNumber order (its documented rule, checked here), and the
    reader's fit is nearer the true geometry than dcm2niix at every corner of the volume.
    """
    paths, truth = jittered_series(tmp_path / "dcm", decimals=decimals, jitter_mm=jitter_mm)
    (vol,) = read_series(paths)
    (nii,) = dcm2niix(tmp_path / "dcm", tmp_path / "out")  # one file: no "_Eq" equalised copy
    theirs = nib.as_closest_canonical(nib.load(nii))
    ours = nib.as_closest_canonical(nib.Nifti1Image(vol.data, vol.affine))
    exact = nib.as_closest_canonical(nib.Nifti1Image(truth.data, truth.affine))
    assert ours.shape == theirs.shape
    assert np.array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
    np.testing.assert_allclose(ours.affine[:3, :2], theirs.affine[:3, :2], atol=1e-3)
    by_instance = sorted(paths, key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber))
    first_step = float(np.linalg.norm(np.diff(positions(by_instance[:2]), axis=0)))
    assert abs(np.linalg.norm(theirs.affine[:3, 2]) - first_step) < 1e-3
    ours_err = corner_error(ours.affine, exact.affine, ours.shape)
    theirs_err = corner_error(theirs.affine, exact.affine, ours.shape)
    apart = corner_error(ours.affine, theirs.affine, ours.shape)
    print(
        f"corner error vs truth: reader {ours_err:.4f} mm, dcm2niix {theirs_err:.4f} mm; apart {apart:.4f} mm"
    )
    assert ours_err < 0.05
    assert ours_err < theirs_err


@needs_dcm2niix
def test_exact_oblique_stack_agrees_with_dcm2niix(tmp_path: Path) -> None:
    """Where positions are exact, the same 20-slice oblique geometry agrees within 1e-3 mm."""
    paths, _ = jittered_series(tmp_path / "dcm", decimals=None)
    (vol,) = read_series(paths)
    (nii,) = dcm2niix(tmp_path / "dcm", tmp_path / "out")
    img = nib.load(nii)
    assert isinstance(img, nib.Nifti1Image)
    assert_same_space(vol, img)


def _refusal(paths: list[Path]) -> str:
    with pytest.raises(SeriesReadError) as info:
        read_series(paths)
    return str(info.value)


@pytest.mark.parametrize("shift_mm", [0.3 * SPACING[2], 0.35], ids=["30pct", "0.35mm"])
def test_uneven_spacing_beyond_the_tolerance_is_refused(tmp_path: Path, shift_mm: float) -> None:
    """One slice of a rounded series moved along the normal by 30 % of the spacing, or by 0.35 mm.

    0.35 mm makes two steps differ from the others by more than dcm2niix's 0.2 mm.
    """
    paths, _ = jittered_series(tmp_path, decimals=1)
    target = positions(paths)[7]
    iop = [float(v) for v in pydicom.dcmread(paths[0]).ImageOrientationPatient]
    normal = np.cross(iop[:3], iop[3:])
    for path in paths:
        ds = pydicom.dcmread(path)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        if np.allclose(ipp, target):
            ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp + normal * shift_mm]
            ds.save_as(path)
            break
    else:
        pytest.fail("slice 7 not found")
    message = _refusal(paths)
    assert "its slice spacing is uneven" in message, message


def test_missing_slice_in_a_rounded_series_is_refused(tmp_path: Path) -> None:
    paths, _ = jittered_series(tmp_path, decimals=1, jitter_mm=0.03, drop_slice=9)
    message = _refusal(paths)
    assert "1 slice(s) are missing (a gap of 14" in message, message


def test_duplicate_positions_in_a_rounded_series_are_refused(tmp_path: Path) -> None:
    paths, _ = jittered_series(tmp_path, decimals=1)
    ds = pydicom.dcmread(paths[3])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    copy = tmp_path / "copy.dcm"
    ds.save_as(copy)
    message = _refusal([*paths, copy])
    assert "share a position" in message, message


def test_gantry_tilt_in_a_rounded_series_is_refused(tmp_path: Path) -> None:
    paths, _ = jittered_series(tmp_path, decimals=1, tilt_mm=0.4)
    message = _refusal(paths)
    assert "against their normal (gantry tilt), which is not supported" in message, message
