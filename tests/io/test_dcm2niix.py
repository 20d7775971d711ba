"""Affines agree with dcm2niix (the Debian reference converter) within 1e-3 mm."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from dicom_node.io.reader import read_series
from dicom_node.io.volume import Volume
from tests.io.series_factory import (
    ORIENTATIONS,
    make_dwi_series,
    make_enhanced_series,
    make_mosaic_series,
    make_series,
)

NIBABEL_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"

pytestmark = pytest.mark.skipif(
    shutil.which("dcm2niix") is None, reason="dcm2niix (Debian package) not installed"
)


def dcm2niix(src: Path, out: Path) -> list[Path]:
    """Run the real dcm2niix on a folder and return its NIfTI files."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["dcm2niix", "-z", "n", "-b", "n", "-f", "%s_%j", "-o", str(out), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sorted(out.glob("*.nii"))


def assert_same_space(vol: Volume, reference: nib.Nifti1Image, tol: float = 1e-3) -> None:
    """Same voxel grid in RAS+ mm (after reorienting both to the closest canonical axes)."""
    ours = nib.as_closest_canonical(nib.Nifti1Image(vol.data, vol.affine))
    theirs = nib.as_closest_canonical(reference)
    assert ours.shape[:3] == theirs.shape[:3]
    assert np.abs(ours.affine - theirs.affine).max() < tol, (ours.affine, theirs.affine)
    assert np.allclose(np.asarray(ours.dataobj), np.asarray(theirs.dataobj), atol=1e-3)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_single_frame_series_match_dcm2niix(tmp_path: Path, orientation: str) -> None:
    paths, _ = make_series(tmp_path / "dcm", orientation=orientation, instance_order="random")
    (vol,) = read_series(paths)
    (nii,) = dcm2niix(tmp_path / "dcm", tmp_path / "out")
    assert_same_space(vol, nib.load(nii))


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_series_match_dcm2niix(tmp_path: Path, syntax: str) -> None:
    """Debian's dcm2niix decodes RLE and JPEG 2000 (not JPEG-LS: built without CharLS)."""
    paths, _ = make_series(tmp_path / "dcm", orientation="coronal", shape=(40, 36, 4), transfer_syntax=syntax)
    (vol,) = read_series(paths)
    (nii,) = dcm2niix(tmp_path / "dcm", tmp_path / "out")
    assert_same_space(vol, nib.load(nii))


@pytest.mark.parametrize("descending", [False, True])
def test_mosaic_with_csa_header_matches_dcm2niix(tmp_path: Path, descending: bool) -> None:
    """A Siemens mosaic with a CSA header; descending slices have a reversed slice normal."""
    paths, truth = make_mosaic_series(tmp_path / "dcm", csa=True, descending=descending)
    (vol,) = read_series(paths)
    assert np.array_equal(vol.data, truth.data)
    (nii,) = dcm2niix(tmp_path / "dcm", tmp_path / "out")
    assert_same_space(vol, nib.load(nii))


def test_enhanced_series_matches_dcm2niix(tmp_path: Path) -> None:
    paths, _ = make_enhanced_series(tmp_path / "dcm")
    (vol,) = read_series(paths)
    (nii,) = dcm2niix(tmp_path / "dcm", tmp_path / "out")
    assert_same_space(vol, nib.load(nii))


def test_dwi_split_matches_dcm2niix_4d(tmp_path: Path) -> None:
    paths, _ = make_dwi_series(tmp_path / "dcm", b_values=(0.0, 1000.0))
    vols = read_series(paths)
    (nii,) = dcm2niix(tmp_path / "dcm", tmp_path / "out")
    img = nib.load(nii)
    assert img.ndim == 4 and img.shape[3] == 2
    for index, vol in enumerate(vols):
        frame = nib.Nifti1Image(np.asarray(img.dataobj)[..., index], img.affine)
        assert_same_space(vol, frame)


@pytest.mark.parametrize("name", ["siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz", "philips_mprage.dcm.gz"])
def test_real_vendor_files_match_dcm2niix(tmp_path: Path, name: str) -> None:
    """nibabel's real Siemens mosaic (CSA header) and Philips Enhanced MR headers."""
    src = tmp_path / "dcm"
    src.mkdir()
    with gzip.open(NIBABEL_DATA / name) as fin:
        (src / "x.dcm").write_bytes(fin.read())
    (vol,) = read_series([src / "x.dcm"])
    (nii,) = dcm2niix(src, tmp_path / "out")
    assert_same_space(vol, nib.load(nii))
