"""Determinism, tumour / tumour-free subjects, voxel size, bad input, NIfTI layout and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dicom_node.sequences import SequenceLabel as S
from training.synth import generate_subject, write_subject
from training.synth.lesions import regions

_SEQS = (S.T1, S.FLAIR)


def test_same_seed_is_bitwise_identical_and_seeds_differ() -> None:
    a = generate_subject(21, sequences=_SEQS, voxel_mm=3.0, tumour=True)
    b = generate_subject(21, sequences=_SEQS, voxel_mm=3.0, tumour=True)
    c = generate_subject(22, sequences=_SEQS, voxel_mm=3.0, tumour=True)
    for seq in _SEQS:
        assert a.images[seq].tobytes() == b.images[seq].tobytes()
        assert not np.array_equal(a.images[seq], c.images[seq])
    assert a.labels.tobytes() == b.labels.tobytes()
    assert a.params == b.params
    assert a.params["pose"] != c.params["pose"]


def test_anatomy_does_not_depend_on_the_sequences_asked_for() -> None:
    a = generate_subject(23, sequences=(S.T1,), voxel_mm=3.0, tumour=True)
    b = generate_subject(23, sequences=(S.T1, S.T2), voxel_mm=3.0, tumour=True)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.images[S.T1], b.images[S.T1])


def test_tumour_free_and_tumour_subjects() -> None:
    free = generate_subject(24, sequences=(S.T1,), voxel_mm=3.0, tumour=False)
    assert not free.labels.any() and free.params["tumour"] is False and free.params["tumours"] == []
    sick = generate_subject(24, sequences=(S.T1,), voxel_mm=3.0, tumour=True)
    reg = regions(sick.labels)
    assert reg["WT"].sum() >= reg["TC"].sum() >= reg["ET"].sum()
    assert reg["WT"].sum() * 27 > 1000  # more than 1 cm^3
    assert 2 in np.unique(sick.labels)


def test_tumour_free_fraction_is_respected() -> None:
    flags = [generate_subject(s, sequences=(S.T1,), voxel_mm=4.0, tumour_free_fraction=1.0).has_tumour for s in (1, 2, 3)]
    assert flags == [False, False, False]


def test_voxel_size_changes_the_grid() -> None:
    s = generate_subject(25, sequences=(S.T2,), voxel_mm=2.5, tumour=False)
    assert s.images[S.T2].shape == (79, 94, 76)
    assert np.allclose(np.diag(s.affine)[:3], 2.5)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"sequences": ("T3",)}, "T3"),
        ({"sequences": ("OTHER",)}, "OTHER"),
        ({"vendor": "toshiba"}, "toshiba"),
        ({"field_strength": 7.0}, "field_strength"),
        ({"tumour_free_fraction": 2.0}, "tumour_free_fraction"),
        ({"voxel_mm": 0.1}, "voxel_mm"),
        ({"motion": 3.0}, "motion"),
    ],
)
def test_bad_input_gives_a_sentence(kwargs: dict, words: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=words):
        generate_subject(1, **{"voxel_mm": 4.0, **kwargs})


def test_write_subject_layout(tmp_path: Path) -> None:
    import nibabel as nib

    s = generate_subject(26, sequences=(S.T1, S.DWI), voxel_mm=4.0, tumour=True)
    folder = write_subject(s, tmp_path)
    assert folder == tmp_path / s.subject_id
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["DWI.nii.gz", "DWI_b0.nii.gz", "T1.nii.gz", "labels.nii.gz", "params.json", "tissue.nii.gz"]
    img: nib.Nifti1Image = nib.load(str(folder / "T1.nii.gz"))  # type: ignore[assignment]
    assert np.array_equal(np.asarray(img.dataobj), s.images[S.T1])
    assert np.allclose(img.affine, s.affine)
    lab: nib.Nifti1Image = nib.load(str(folder / "labels.nii.gz"))  # type: ignore[assignment]
    assert np.array_equal(np.asarray(lab.dataobj), s.labels)
    params = json.loads((folder / "params.json").read_text())
    assert params["seed"] == 26
    assert {"tr", "te", "flip_deg", "b_values"} <= set(params["sequences"]["DWI"])
    assert params["sequences"]["DWI"]["b_values"] == [0.0, 1000.0]


def test_cli_is_deterministic(tmp_path: Path) -> None:
    from dicom_node.cli import main

    args = ["synth", "--subjects", "2", "--seed", "40", "--voxel-mm", "4", "--sequences", "t1,flair"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    import nibabel as nib

    for sid in ("synth-000040", "synth-000041"):
        for name in ("T1.nii.gz", "FLAIR.nii.gz", "labels.nii.gz"):
            a = np.asarray(nib.load(str(tmp_path / "a" / sid / name)).dataobj)  # type: ignore[attr-defined]
            b = np.asarray(nib.load(str(tmp_path / "b" / sid / name)).dataobj)  # type: ignore[attr-defined]
            assert np.array_equal(a, b)
    assert main(["synth", "--out", str(tmp_path / "c"), "--sequences", "T1,T9"]) == 2
    one = ["synth", "--seed", "40", "--voxel-mm", "4", "--sequences", "t1", "--anatomy", "cat12"]
    assert main([*one, "--out", str(tmp_path / "d")]) == 0
    params = json.loads((tmp_path / "d" / "synth-000040" / "params.json").read_text())
    assert params["anatomy_source"] == "cat12"


def test_motion_adds_ghosts_outside_the_head() -> None:
    still = generate_subject(27, sequences=(S.T2,), voxel_mm=3.0, tumour=False, snr_scale=1000.0)
    moved = generate_subject(27, sequences=(S.T2,), voxel_mm=3.0, tumour=False, snr_scale=1000.0, motion=1.0)
    assert moved.params["rendering"]["T2"]["motion"] > 0
    air = still.tissue == 0
    # ghosts put signal into the air around the head
    assert moved.images[S.T2][air].mean() > 1.5 * still.images[S.T2][air].mean()


def test_output_does_not_depend_on_the_thread_count() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = generate_subject(28, sequences=(S.T1, S.T2, S.DWI), voxel_mm=3.0, tumour=True)
        torch.set_num_threads(2)
        two = generate_subject(28, sequences=(S.T1, S.T2, S.DWI), voxel_mm=3.0, tumour=True)
    finally:
        torch.set_num_threads(before)
    for seq in one.images:
        assert one.images[seq].tobytes() == two.images[seq].tobytes()
    assert one.tissue.tobytes() == two.tissue.tobytes()
