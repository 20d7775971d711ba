"""BraTS 2021 and BraTS 2023 folders read as they are, with the ``auto`` layout (issue 21)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.datasets import LoadSubjectd, subject_items
from training.manifest import ManifestError, build_manifest

NAMES = {
    "2021": ("BraTS2021_00001", "_", {"t1": "T1", "t1ce": "T1C", "t2": "T2", "flair": "FLAIR"}),
    "2023": ("BraTS-GLI-00001-000", "-", {"t1n": "T1", "t1c": "T1C", "t2w": "T2", "t2f": "FLAIR"}),
}


def _write_subject(root: Path, year: str) -> np.ndarray:
    import nibabel as nib

    sid, sep, names = NAMES[year]
    folder = root / sid
    folder.mkdir(parents=True)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    rng = np.random.default_rng(0)
    for i, suffix in enumerate(names):
        vol = (rng.random((12, 12, 10)) * 100 + 50 * (i + 1)).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, affine), folder / f"{sid}{sep}{suffix}.nii.gz")
    seg = np.zeros((12, 12, 10), dtype=np.uint8)
    seg[4:6, 4:6, 4:6] = 1  # necrosis
    seg[6:8, 4:6, 4:6] = 2  # oedema
    seg[4:6, 6:8, 4:6] = 4 if year == "2021" else 3  # enhancing tumour: 4 in BraTS 2021, 3 in 2023
    nib.save(nib.Nifti1Image(seg, affine), folder / f"{sid}{sep}seg.nii.gz")
    return seg


@pytest.mark.parametrize("year", ["2021", "2023"])
def test_brats_folders_give_four_sequences_and_labels(tmp_path: Path, year: str) -> None:
    seg = _write_subject(tmp_path / "data", year)
    manifest = build_manifest(tmp_path / "data", "auto")
    [subject] = manifest.subjects
    assert subject.id == NAMES[year][0]
    assert set(subject.sequences) == {"T1", "T1C", "T2", "FLAIR"}
    assert subject.labels is not None and subject.labels.endswith(f"{NAMES[year][1]}seg.nii.gz")
    assert manifest.source.startswith("brats:")
    for suffix, seq in NAMES[year][2].items():
        assert subject.sequences[seq].path.endswith(f"{NAMES[year][1]}{suffix}.nii.gz")
    [item] = subject_items(manifest, ["T1", "T1C", "T2", "FLAIR"])
    out = LoadSubjectd(["T1", "T1C", "T2", "FLAIR"], [2.0, 2.0, 2.0])(dict(item.items()))
    labels = out["label"]
    assert out["present"].all()
    # Both years end with the enhancing tumour as 3 and the same voxel counts per label.
    assert sorted(np.unique(labels).astype(int).tolist()) == [0, 1, 2, 3]
    assert int((labels == 3).sum()) == int((seg >= 3).sum())


def test_a_folder_of_neither_layout_is_explained(tmp_path: Path) -> None:
    (tmp_path / "data" / "x").mkdir(parents=True)
    (tmp_path / "data" / "x" / "notes.txt").write_text("nothing")
    with pytest.raises(ManifestError, match="BraTS 2023"):
        build_manifest(tmp_path / "data", "brats")


def test_converted_series_take_the_label_map_put_beside_them(tmp_path: Path) -> None:
    import json

    import nibabel as nib

    study = tmp_path / "converted" / "study-1"
    study.mkdir(parents=True)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for i, seq in enumerate(("T1", "FLAIR")):
        nib.save(nib.Nifti1Image(np.full((8, 8, 6), 10.0 * (i + 1), np.float32), affine),
                 study / f"00{i + 1}_{seq.lower()}.nii.gz")
        (study / f"00{i + 1}_{seq.lower()}.json").write_text(json.dumps({"SequenceLabel": seq}))
    manifest = build_manifest(tmp_path / "converted", "converted")
    assert manifest.subjects[0].labels is None
    nib.save(nib.Nifti1Image(np.ones((8, 8, 6), np.uint8), affine), study / "labels.nii.gz")
    [subject] = build_manifest(tmp_path / "converted", "converted").subjects
    assert set(subject.sequences) == {"T1", "FLAIR"}
    assert subject.labels is not None and subject.labels.endswith("labels.nii.gz")
