"""A training manifest from real ``mrinode convert`` output of a synthetic DICOM study."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.cli import main
from training.datasets import LoadSubjectd, subject_items
from training.manifest import build_manifest


def test_converted_study_gives_a_four_sequence_subject(tmp_path: Path) -> None:
    assert main(["synth", "--out", str(tmp_path / "s"), "--subjects", "1", "--seed", "7", "--voxel-mm", "2",
                 "--dicom", "--threads", "1"]) == 0
    subject = tmp_path / "s" / "synth-000007"
    assert main(["convert", str(subject / "dicom"), str(tmp_path / "c")]) == 0
    sidecars = {json.loads(p.read_text())["SequenceLabel"] for p in (tmp_path / "c").glob("*.json")}
    assert sidecars == {"T1", "T1C", "T2", "FLAIR"}

    manifest = build_manifest(tmp_path / "c", "converted")
    assert len(manifest.subjects) == 1
    seqs = manifest.subjects[0].sequences
    assert set(seqs) == {"T1", "T1C", "T2", "FLAIR"}
    assert seqs["FLAIR"].meta["InversionTime"] > 1.0  # acquisition metadata kept (seconds, BIDS)

    # The converted T1 shows the synthetic engine's T1 at the same place in the scanner: sample it at
    # the world positions of the engine's own (2 mm) NIfTI voxels and correlate inside the head.
    import nibabel as nib
    from scipy.ndimage import map_coordinates

    conv_img: Any = nib.load(seqs["T1"].path)
    orig_img: Any = nib.load(subject / "T1.nii.gz")
    orig = np.asarray(orig_img.dataobj, dtype=np.float32)
    ijk = np.indices(orig.shape).reshape(3, -1)
    world = orig_img.affine[:3, :3] @ ijk + orig_img.affine[:3, 3:]
    inv = np.linalg.inv(conv_img.affine)
    conv_ijk = inv[:3, :3] @ world + inv[:3, 3:]
    conv = map_coordinates(np.asarray(conv_img.dataobj, dtype=np.float32), conv_ijk, order=1).reshape(orig.shape)
    head = orig > np.percentile(orig, 60)
    r = np.corrcoef(conv[head], orig[head])[0, 1]
    flipped = np.corrcoef(conv[::-1][head], orig[head])[0, 1]  # a left-right error would show
    assert r > 0.8 and flipped < r - 0.1

    raw: Any = subject_items(manifest, ["T1", "T1C", "T2", "FLAIR"], require_labels=False)[0]
    item = LoadSubjectd(["T1", "T1C", "T2", "FLAIR"], [2.0, 2.0, 2.0])(raw)
    assert np.asarray(item["present"]).all()
    assert np.isfinite(np.asarray(item["image"])).all() and np.asarray(item["image"]).std() > 0.5
