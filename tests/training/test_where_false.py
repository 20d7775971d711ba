"""Where false tumour lies in a synthetic head (training.healthy.where_false, false_tumour_table's tissue rows)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from training.healthy import DEEP_GREY_MM, false_tumour_table, where_false
from training.synth.tissue import Tissue

VOXEL = (1.0, 1.0, 2.0)  # anisotropic: depth must be measured in mm, not in voxels


def _head() -> np.ndarray:
    """A box brain (WM core, 3-voxel GM rind) with a GM block in its middle, fat around it."""
    tissue = np.full((90, 90, 45), int(Tissue.FAT), dtype=np.int16)
    tissue[5:85, 5:85, 3:42] = int(Tissue.GM)
    tissue[8:82, 8:82, 5:40] = int(Tissue.WM)
    tissue[40:50, 40:50, 20:25] = int(Tissue.GM)  # deep grey: over 30 mm below every face of the brain
    tissue[44:46, 44:46, 22:23] = int(Tissue.CSF)  # a cavity: filled, so it does not make a surface
    return tissue


def test_false_tumour_is_split_by_tissue_and_deep_grey_is_measured_in_mm() -> None:
    tissue = _head()
    labels = np.zeros(tissue.shape, dtype=np.uint8)
    labels[40:50, 40:50, 20:25] = 2  # the deep grey block (and the CSF voxels within it)
    labels[5:8, 40:50, 20:25] = 2  # cortex-like rind at the brain's surface: grey, not deep
    labels[0:3, 0:2, 0:2] = 1  # fat outside the brain
    out = where_false(labels, tissue, VOXEL)
    ml = float(np.prod(VOXEL)) / 1000.0
    assert out["ml_by_tissue"] == {
        "CSF": round(4 * ml, 3),
        "GM": round((500 - 4 + 150) * ml, 3),
        "FAT": round(12 * ml, 3),
    }
    assert out["ml_deep_grey"] == round((500 - 4) * ml, 3)


def test_deep_grey_needs_the_distance_in_mm() -> None:
    # a grey block 12 voxels in from the top face: 24 mm along k (2 mm voxels) -> deep, only 12 mm if voxels were 1 mm
    tissue = np.full((60, 60, 40), int(Tissue.WM), dtype=np.int16)
    tissue[0, :, :] = tissue[-1, :, :] = tissue[:, 0, :] = tissue[:, -1, :] = int(Tissue.AIR)
    tissue[:, :, 0] = tissue[:, :, -1] = int(Tissue.AIR)
    tissue[25:35, 25:35, 12:14] = int(Tissue.GM)
    labels = (tissue == Tissue.GM).astype(np.uint8)
    assert DEEP_GREY_MM <= 2.0 * 12 - 1
    assert where_false(labels, tissue, (1.0, 1.0, 2.0))["ml_deep_grey"] > 0
    assert where_false(labels, tissue, (1.0, 1.0, 1.0))["ml_deep_grey"] == 0


def test_labels_and_tissue_on_different_grids_are_refused() -> None:
    with pytest.raises(ValueError, match="not on one grid"):
        where_false(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.int16), (1, 1, 1))


def test_false_tumour_table_adds_where_for_heads_with_a_tissue_map(tmp_path: Path) -> None:
    tissue = _head()
    affine = np.diag([*VOXEL, 1.0])
    image = (tissue == Tissue.GM).astype(np.float32) * 100.0
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "FLAIR.nii.gz"))
    nib.save(nib.Nifti1Image(tissue, affine), str(tmp_path / "tissue.nii.gz"))

    def predict(images: dict[str, np.ndarray], ref_affine: np.ndarray) -> SimpleNamespace:
        assert np.allclose(ref_affine, affine)
        labels = np.zeros(tissue.shape, dtype=np.uint8)
        labels[40:50, 40:50, 20:25] = 2
        return SimpleNamespace(labels=labels, ood_score=None)

    engine = SimpleNamespace(channels=["T1", "FLAIR"], predict=predict)
    heads = {"h": {"FLAIR": str(tmp_path / "FLAIR.nii.gz")}}
    rows = false_tumour_table(engine, heads, "synthetic", tissue={"h": tmp_path / "tissue.nii.gz"})
    assert [r["subset"] for r in rows] == ["FLAIR"]
    assert rows[0]["ml"] == pytest.approx(1.0)
    assert rows[0]["ml_by_tissue"] == {"CSF": 0.008, "GM": 0.992}
    assert rows[0]["ml_deep_grey"] == 0.992
    plain = false_tumour_table(engine, heads, "synthetic")
    assert "ml_by_tissue" not in plain[0]

