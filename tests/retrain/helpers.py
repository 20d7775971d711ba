"""Helpers of the retraining tests: synthetic studies with planted identifiers, and a
radiologist's corrected SEG of the node's result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import generate_uid

__all__ = ["Study", "corrected_seg", "find_identifiers", "synth_subject", "tiny_finetune_toml"]

REPO = Path(__file__).resolve().parents[2]


def tiny_finetune_toml(path: Path, *, name: str, out: Path, steps: int, lr: float = 3e-3, seed: int = 95000,
                       extra_train: str = "", sequence_dropout: float = 0.5) -> Path:
    """A tiny fine-tuning config (4 mm grid, 32³ crops, a 12-feature Swin encoder) for CPU tests."""
    path.write_text(f"""
name = "{name}"
seed = 0
[data]
synth = {{ subjects = 2, seed = {seed}, voxel_mm = 4.0, tumour = true }}
val_subjects = 0
[network]
num_classes = 4
norm = "batch"
[network.encoder]
name = "swin3d"
feature_size = 12
depths = [1, 1, 1, 1]
num_heads = [1, 2, 2, 4]
window_size = 4
[preprocessing]
channels = ["T1", "T1C", "T2", "FLAIR"]
spacing_mm = [4.0, 4.0, 4.0]
roi_size = [32, 32, 32]
overlap = 0.0
[train]
max_steps = {steps}
batch_size = 1
samples_per_subject = 2
lr = {lr}
sequence_dropout = {sequence_dropout}
threads = 2
log_every = 5
checkpoint_every = 1000
out_dir = "{out / 'run'}"
{extra_train}
[bundle]
out = "{out / 'bundle'}"
version = "1.0.0"
half = false
description = "Tiny retraining test model."
""")
    return path


def synth_subject(out: Path, seed: int) -> Path:
    """``mrinode synth --dicom`` of one subject with a tumour (NIfTI labels at 4 mm kept); its folder."""
    cmd = [sys.executable, "-m", "dicom_node", "synth", "--out", str(out), "--subjects", "1", "--seed", str(seed),
           "--dicom", "--voxel-mm", "4", "--tumour-free-fraction", "0", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return next(p for p in sorted(out.iterdir()) if (p / "dicom").is_dir())


def _halve(ds: pydicom.Dataset) -> None:
    """Every second row and column (pixel spacing doubled): a quarter of the pixels, the same anatomy."""
    arr = np.ascontiguousarray(ds.pixel_array[::2, ::2])
    ds.PixelData = arr.tobytes()
    ds.Rows, ds.Columns = arr.shape
    ds.PixelSpacing = [float(v) * 2 for v in ds.PixelSpacing]


class Study:
    """A copy of a synthetic subject's DICOM with new UIDs and planted identifiers.

    ``coarse=True`` keeps every second row, column and (in series of more than 60 slices) slice,
    so the node, the harvest and the training read an eighth of the voxels (a test's time).
    """

    def __init__(self, subject: Path, dst: Path, tag: str, *, coarse: bool = False) -> None:
        self.subject = subject
        self.folder = dst
        self.study_uid = str(generate_uid())
        self.identifiers = {
            "PatientName": f"Testperson^Planted{tag}",
            "PatientID": f"PID-PLANTED-{tag}",
            "AccessionNumber": f"ACC{tag}77",
            "InstitutionName": f"Planted Hospital {tag}",
            "ReferringPhysicianName": f"Referrer^Planted{tag}",
            "PatientBirthDate": "19450704",
        }
        self.uids: set[str] = {self.study_uid}
        mapping: dict[str, str] = {}
        for series in sorted(p for p in (subject / "dicom").iterdir() if p.is_dir()):
            files = sorted(series.glob("*.dcm"), key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True)
                                                                   .InstanceNumber))
            if coarse and len(files) > 60:
                files = files[::2]
            for path in files:
                ds = pydicom.dcmread(path)
                if coarse:
                    _halve(ds)
                ds.StudyInstanceUID = self.study_uid
                for kw in ("SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
                    setattr(ds, kw, mapping.setdefault(str(ds[kw].value), str(generate_uid())))
                for kw, value in self.identifiers.items():
                    setattr(ds, kw, value)
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                target = dst / series.name / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(target, enforce_file_format=True)
        self.uids |= set(mapping.values())

    @property
    def labels(self) -> Path:
        """The subject's true label map (NIfTI, 4 mm)."""
        return self.subject / "labels.nii.gz"


def _truth_on(vol: Any, labels_nii: Path) -> np.ndarray:
    """The true labels looked up (nearest) at every voxel centre of ``vol``'s grid."""
    import nibabel as nib

    img: Any = nib.load(str(labels_nii))
    truth = np.asarray(img.dataobj).astype(np.int16)
    to_truth = np.linalg.inv(img.affine) @ vol.affine
    ni, nj, nk = vol.data.shape
    ii, jj = np.meshgrid(np.arange(ni), np.arange(nj), indexing="ij")
    out = np.zeros(vol.data.shape, dtype=np.int16)
    for k in range(nk):
        pts = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k), np.ones(ii.size)])
        idx = np.rint((to_truth @ pts)[:3]).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(truth.shape)[:, None]), axis=0)
        plane = np.zeros(ii.size, dtype=np.int16)
        plane[ok] = truth[idx[0, ok], idx[1, ok], idx[2, ok]]
        out[:, :, k] = plane.reshape(ni, nj)
    return out


def corrected_seg(node_seg: bytes, study: Study, card: Any, out: Path) -> tuple[Path, dict[str, int]]:
    """The radiologist's correction of the node's SEG, written as a new SEG series by another manufacturer.

    The node's label map is edited the way a radiologist would: tumour the model missed is
    added (with its true label), regions it marked where there is no tumour are removed.

    Returns
    -------
    (Path, dict)
        The corrected SEG file and voxel counts (``added``, ``removed``).
    """
    import io

    from dicom_node.io.codes import algorithm_from_card, segments_from_card
    from dicom_node.io.reader import read_series
    from dicom_node.io.seg import read_seg_labels, write_seg

    seg = pydicom.dcmread(io.BytesIO(node_seg))
    ref_uid = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    files = [p for p in study.folder.rglob("*.dcm")
             if str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) == ref_uid]
    reference = read_series(files)[0]
    segments = segments_from_card(card)
    node = read_seg_labels(seg, reference, segments)
    truth = _truth_on(reference, study.labels)
    missed = (truth > 0) & (node == 0)
    false = (node > 0) & (truth == 0)
    corrected = node.copy()
    corrected[missed] = truth[missed]
    corrected[false] = 0
    algorithm = algorithm_from_card(card)
    ds = write_seg(corrected, reference, segments, algorithm, series_number=950,
                   series_description="AI tumour SEG corrected by radiologist", manufacturer="ViewerWorks",
                   manufacturer_model_name="Reading Station", content_label="CORRECTED")
    for item in ds.SegmentSequence:
        item.SegmentAlgorithmType = "MANUAL"
        for kw in ("SegmentationAlgorithmIdentificationSequence", "SegmentAlgorithmName"):
            if kw in item:
                delattr(item, kw)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "corrected-seg.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, {"added": int(missed.sum()), "removed": int(false.sum())}


def find_identifiers(root: Path, needles: set[str]) -> list[str]:
    """``file: needle`` for every planted identifier found in any file under ``root`` (.gz read inflated)."""
    import gzip

    hits = []
    raw = {n: n.encode() for n in needles if n}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        hits += [f"{path}: {n}" for n, b in raw.items() if b in data]
    return hits
