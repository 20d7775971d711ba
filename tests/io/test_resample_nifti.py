"""Resampling in physical space and NIfTI export with sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dicom_node.io.nifti import volume_to_nifti, write_nifti_with_sidecar
from dicom_node.io.reader import read_series
from dicom_node.io.resample import resample_to
from dicom_node.io.volume import Volume
from tests.io.series_factory import make_dwi_series, make_series


def _volume(data: np.ndarray, affine: np.ndarray) -> Volume:
    return Volume(data=data, affine=affine, series_uid="1.2.3", frame_of_reference_uid="1.2.4")


def test_resample_onto_same_grid_is_identity(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path, orientation="oblique")
    (vol,) = read_series(paths)
    out = resample_to(vol, vol, order=1)
    assert np.array_equal(out.data, vol.data)
    assert np.array_equal(out.affine, vol.affine)


def test_resample_linear_field_is_exact_in_physical_space() -> None:
    """A field linear in world coordinates is reproduced exactly by linear interpolation."""
    moving_affine = np.array([[0, -2.0, 0, 40], [1.5, 0, 0, -20], [0, 0, 2.5, 5], [0, 0, 0, 1]])
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (30, 28, 20)], indexing="ij"), axis=-1).astype(float)
    world = ijk @ moving_affine[:3, :3].T + moving_affine[:3, 3]
    field = (world @ np.array([0.3, -0.2, 0.5]) + 7.0).astype(np.float32)
    moving = _volume(field, moving_affine)
    theta = np.radians(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    ref_affine = np.eye(4)
    ref_affine[:3, :3] = rot * 1.7
    ref_affine[:3, 3] = (10.0, -25.0, 12.0)
    reference = _volume(np.zeros((10, 9, 8), np.float32), ref_affine)
    out = resample_to(moving, reference, order=1)
    ref_ijk = np.stack(np.meshgrid(*[np.arange(n) for n in reference.shape], indexing="ij"), axis=-1).astype(
        float
    )
    ref_world = ref_ijk @ ref_affine[:3, :3].T + ref_affine[:3, 3]
    expected = ref_world @ np.array([0.3, -0.2, 0.5]) + 7.0
    inside = out.data != 0
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out.data[inside], expected[inside], atol=1e-3)
    assert out.shape == reference.shape and np.array_equal(out.affine, ref_affine)


def test_resample_labels_nearest_keeps_values_and_dtype() -> None:
    labels = np.zeros((20, 20, 10), np.uint8)
    labels[5:15, 5:15, 2:8] = 2
    labels[8:12, 8:12, 4:6] = 1
    moving = _volume(labels, np.diag([1.0, 1.0, 2.0, 1.0]))
    reference = _volume(np.zeros((40, 40, 20), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]))
    out = resample_to(moving, reference, order=0)
    assert out.data.dtype == np.uint8
    assert set(np.unique(out.data)) == {0, 1, 2}
    # Volume in mm^3 is preserved on a grid that subdivides the original exactly.
    assert np.count_nonzero(out.data == 1) * 0.25 == np.count_nonzero(labels == 1) * 2.0


def test_resample_rejects_bad_order() -> None:
    vol = _volume(np.zeros((2, 2, 2), np.float32), np.eye(4))
    with pytest.raises(ValueError, match=r"order must be 0\.\.5"):
        resample_to(vol, vol, order=7)


def test_nifti_and_sidecar(tmp_path: Path) -> None:
    paths, truth = make_series(tmp_path / "dcm", orientation="sagittal", rescale=(0.5, 0.0))
    (vol,) = read_series(paths)
    nii, side = write_nifti_with_sidecar(vol, tmp_path / "out")
    assert nii.name == "003_t1_se.nii.gz" and side.name == "003_t1_se.json"
    img = nib.load(nii)
    assert img.get_data_dtype() == np.float32  # 0.5 steps are not integers
    np.testing.assert_allclose(img.affine, truth.affine, atol=1e-5)
    assert np.array_equal(np.asarray(img.dataobj), truth.data)
    meta = json.loads(side.read_text())
    assert meta["RepetitionTime"] == 0.5 and meta["EchoTime"] == 0.012 and meta["FlipAngle"] == 90.0
    assert meta["MagneticFieldStrength"] == 3.0 and meta["Manufacturer"] == "MRINODE-TEST"
    assert meta["SequenceName"] == "se2d1" and meta["SeriesDescription"] == "t1_se"


def test_integer_volume_is_stored_as_int16(tmp_path: Path) -> None:
    paths, _ = make_dwi_series(tmp_path / "dcm")
    vols = read_series(paths)
    for vol in vols:
        img = volume_to_nifti(vol)
        assert img.get_data_dtype() == np.int16
        nii, side = write_nifti_with_sidecar(vol, tmp_path / "out")
        assert nii.name == f"007_ep2d_diff_trace_{vol.split}.nii.gz"
        assert json.loads(side.read_text())["DiffusionBValue"] == float(vol.split[1:])  # type: ignore[index]
