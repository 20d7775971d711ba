"""Build DICOM test series with pydicom, with their exact expected volumes and affines.

Every factory returns the file paths and a :class:`Truth` holding the voxel array in
``(i, j, k)`` order (columns, rows, slices along the normal) and the RAS+ affine that a
correct reader must produce.
"""

from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

__all__ = [
    "ORIENTATIONS",
    "Truth",
    "base_dataset",
    "make_dwi_series",
    "make_enhanced_series",
    "make_mosaic_series",
    "make_series",
    "orientation_cosines",
]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

ORIENTATIONS = ("axial", "sagittal", "coronal", "oblique")


@dataclass
class Truth:
    """What a reader must produce for a generated series."""

    data: np.ndarray
    affine: np.ndarray
    series_uid: str
    sop_uids_by_k: list[str] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)


def orientation_cosines(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines (LPS) for a named orientation."""
    if name == "axial":
        return np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    if name == "sagittal":
        return np.array([0, 1.0, 0]), np.array([0, 0, -1.0])
    if name == "coronal":
        return np.array([1.0, 0, 0]), np.array([0, 0, -1.0])
    if name == "oblique":
        a, b = math.radians(17.0), math.radians(-11.0)
        rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
        rot = rx @ rz
        return rot @ np.array([1.0, 0, 0]), rot @ np.array([0, 1.0, 0])
    raise ValueError(f"unknown orientation {name!r}")


def _ds_str(values: np.ndarray | list[float]) -> list[str]:
    return [f"{float(v):.10g}"[:16] for v in values]


def base_dataset(
    study_uid: str, series_uid: str, frame_uid: str, *, series_number: int = 3, description: str = "t1_se_tra"
) -> Dataset:
    """A header with the Patient, Study, Series, Frame of Reference and Equipment modules."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Test^Io"
    ds.PatientID = "IO-TEST-1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.AccessionNumber = "A1"
    ds.StudyID = "1"
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "MRINODE-TEST"
    ds.ManufacturerModelName = "Factory"
    ds.MagneticFieldStrength = "3"
    ds.RepetitionTime = "500"
    ds.EchoTime = "12"
    ds.FlipAngle = "90"
    ds.SequenceName = "se2d1"
    return ds


def _finish(ds: Dataset, sop_class: str, path: Path, transfer_syntax: str | None) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    if transfer_syntax is not None and transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def _image_pixels(ds: Dataset, plane: np.ndarray) -> None:
    """Set 16-bit unsigned pixel data from a (rows, cols) array."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(plane.shape[0]), int(plane.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(plane.astype(np.uint16)).tobytes()


def make_series(
    out_dir: Path,
    *,
    orientation: str = "axial",
    shape: tuple[int, int, int] = (24, 20, 12),
    spacing: tuple[float, float, float] = (0.9, 1.1, 2.5),
    origin: tuple[float, float, float] = (-12.5, 30.25, 7.0),
    instance_order: str = "against",
    shuffle_files: bool = True,
    transfer_syntax: str | None = None,
    rescale: tuple[float, float] | None = None,
    drop_slice: int | None = None,
    tilt_mm: float = 0.0,
    seed: int = 0,
    series_number: int = 3,
    description: str = "t1_se",
    study_uid: str | None = None,
    frame_uid: str | None = None,
) -> tuple[list[Path], Truth]:
    """Write a single-frame MR series.

    Parameters
    ----------
    out_dir : Path
        Folder for the files (created).
    orientation : str
        ``axial``, ``sagittal``, ``coronal`` or ``oblique``.
    shape : tuple of int
        ``(ni, nj, nk)``: columns, rows, slices.
    spacing : tuple of float
        Column spacing, row spacing (mm in-plane along i and j), slice spacing.
    instance_order : str
        ``"with"``: InstanceNumber rises with position; ``"against"``: falls;
        ``"random"``: shuffled.
    transfer_syntax : str, optional
        Compress with pydicom (RLE, JPEG-LS, JPEG 2000 lossless).
    rescale : (slope, intercept), optional
        Stored values are ``(true - intercept) / slope``.
    drop_slice : int, optional
        Omit the file of this slice index (a gap).
    tilt_mm : float
        Shift each slice along the row direction by ``k * tilt_mm`` (gantry tilt).

    Returns
    -------
    paths, truth
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ni, nj, nk = shape
    row_dir, col_dir = orientation_cosines(orientation)
    normal = np.cross(row_dir, col_dir)
    slope, intercept = rescale if rescale is not None else (1.0, 0.0)
    stored = rng.integers(0, 4000, size=(ni, nj, nk)).astype(np.uint16)
    data = (stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    series_uid = generate_uid()
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * spacing[0]
    affine_lps[:3, 1] = col_dir * spacing[1]
    affine_lps[:3, 2] = normal * spacing[2] + row_dir * tilt_mm
    affine_lps[:3, 3] = origin
    ks = list(range(nk))
    numbers = {"with": ks, "against": ks[::-1], "random": random.Random(seed).sample(ks, nk)}[instance_order]
    paths: list[Path] = []
    sop_uids: list[str] = []
    names = (
        [f"f{n:04d}.dcm" for n in random.Random(seed + 1).sample(range(nk), nk)] if shuffle_files else None
    )
    for k in ks:
        sop_uid = generate_uid()
        sop_uids.append(sop_uid)
        if k == drop_slice:
            continue
        ds = base_dataset(
            study_uid, series_uid, frame_uid, series_number=series_number, description=description
        )
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = numbers[k] + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTrainLength = 1
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.SpacingBetweenSlices = f"{spacing[2]:g}"
        ds.PixelSpacing = _ds_str([spacing[1], spacing[0]])
        ds.ImageOrientationPatient = _ds_str(np.concatenate([row_dir, col_dir]))
        ipp = affine_lps[:3, :3] @ np.array([0, 0, k]) + affine_lps[:3, 3]
        ds.ImagePositionPatient = _ds_str(ipp)
        ds.SliceLocation = f"{float(np.dot(ipp, normal)):.6g}"
        if rescale is not None:
            ds.RescaleSlope = f"{slope:g}"
            ds.RescaleIntercept = f"{intercept:g}"
            ds.RescaleType = "US"
        _image_pixels(ds, stored[:, :, k].T)
        path = out_dir / (names[k] if names else f"s{k:04d}.dcm")
        _finish(ds, MRImageStorage, path, transfer_syntax)
        paths.append(path)
    truth = Truth(data=data, affine=LPS_TO_RAS @ affine_lps, series_uid=series_uid, sop_uids_by_k=sop_uids)
    return sorted(paths), truth


def make_dwi_series(
    out_dir: Path,
    *,
    b_values: tuple[float, ...] = (0.0, 1000.0),
    shape: tuple[int, int, int] = (16, 16, 6),
    seed: int = 3,
) -> tuple[list[Path], list[Truth]]:
    """Write a trace-weighted DWI series: one slice stack per b-value at the same positions."""
    study_uid, frame_uid, series_uid = generate_uid(), generate_uid(), generate_uid()
    truths: list[Truth] = []
    paths: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = 0
    for b in b_values:
        stored = rng.integers(0, 3000, size=shape).astype(np.uint16)
        affine_lps = np.diag([2.0, 2.0, 4.0, 1.0])
        affine_lps[:3, 3] = (-16.0, -16.0, 10.0)
        uids = []
        for k in range(shape[2]):
            ds = base_dataset(
                study_uid, series_uid, frame_uid, series_number=7, description="ep2d_diff_trace"
            )
            ds.SOPInstanceUID = generate_uid()
            uids.append(ds.SOPInstanceUID)
            n += 1
            ds.InstanceNumber = n
            ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"]
            ds.ScanningSequence = "EP"
            ds.SequenceVariant = "SK"
            ds.MRAcquisitionType = "2D"
            ds.DiffusionBValue = b
            ds.SliceThickness = "4"
            ds.PixelSpacing = ["2", "2"]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.ImagePositionPatient = _ds_str(affine_lps[:3, 3] + np.array([0, 0, 4.0 * k]))
            _image_pixels(ds, stored[:, :, k].T)
            path = out_dir / f"dwi{n:04d}.dcm"
            _finish(ds, MRImageStorage, path, None)
            paths.append(path)
        truths.append(Truth(stored.astype(np.float32), LPS_TO_RAS @ affine_lps, series_uid, uids, {"b": b}))
    return paths, truths


def make_enhanced_series(
    out_dir: Path, *, orientation: str = "oblique", shape: tuple[int, int, int] = (20, 18, 8), seed: int = 5
) -> tuple[list[Path], Truth]:
    """Write one Enhanced MR-like multi-frame instance with per-frame functional groups.

    Frames are stored in reverse slice order, so frame order runs against position.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ni, nj, nk = shape
    rng = np.random.default_rng(seed)
    stored = rng.integers(0, 4000, size=shape).astype(np.uint16)
    row_dir, col_dir = orientation_cosines(orientation)
    normal = np.cross(row_dir, col_dir)
    affine_lps = np.eye(4)
    affine_lps[:3, 0], affine_lps[:3, 1], affine_lps[:3, 2] = row_dir * 1.25, col_dir * 1.25, normal * 3.0
    affine_lps[:3, 3] = (5.5, -20.0, 33.0)
    ds = base_dataset(
        generate_uid(), generate_uid(), generate_uid(), series_number=11, description="t2_enhanced"
    )
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = nk
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = ["1.25", "1.25"]
    pm.SliceThickness = "3"
    shared.PixelMeasuresSequence = DicomSequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = _ds_str(np.concatenate([row_dir, col_dir]))
    shared.PlaneOrientationSequence = DicomSequence([po])
    timing = Dataset()
    timing.RepetitionTime = 4000.0
    timing.FlipAngle = 150.0
    shared.MRTimingAndRelatedParametersSequence = DicomSequence([timing])
    echo = Dataset()
    echo.EffectiveEchoTime = 95.0
    shared.MREchoSequence = DicomSequence([echo])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per = []
    planes = []
    order = list(range(nk))[::-1]
    for k in order:
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = _ds_str(affine_lps[:3, 3] + affine_lps[:3, 2] * k)
        item.PlanePositionSequence = DicomSequence([pp])
        fc = Dataset()
        fc.StackID = "1"
        fc.InStackPositionNumber = k + 1
        item.FrameContentSequence = DicomSequence([fc])
        per.append(item)
        planes.append(stored[:, :, k].T)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = nj, ni
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(np.stack(planes)).tobytes()
    path = out_dir / "enhanced.dcm"
    _finish(ds, "1.2.840.10008.5.1.4.1.1.4.1", path, None)
    return [path], Truth(
        stored.astype(np.float32),
        LPS_TO_RAS @ affine_lps,
        str(ds.SeriesInstanceUID),
        extra={"frame_of_k": [nk - k for k in range(nk)]},
    )


def siemens_csa2(tags: dict[str, tuple[str, list[str]]]) -> bytes:
    """Encode a Siemens CSA2 ("SV10") header: ``{name: (vr, [values as text])}``."""
    out = bytearray(b"SV10\x04\x03\x02\x01")
    out += struct.pack("<2I", len(tags), 77)
    for name, (vr, values) in tags.items():
        out += struct.pack("<64si4s3i", name.encode(), len(values), vr.encode(), 0, len(values), 77)
        for value in values:
            raw = value.encode() + b"\x00"
            out += struct.pack("<4i", len(raw), len(raw), 77, len(raw))
            out += raw + b"\x00" * (-len(raw) % 4)
    return bytes(out)


def make_mosaic_series(
    out_dir: Path,
    *,
    n_slices: int = 7,
    tile: tuple[int, int] = (16, 14),
    seed: int = 9,
    csa: bool = False,
    descending: bool = False,
) -> tuple[list[Path], Truth]:
    """Write one Siemens-style mosaic instance.

    Without ``csa`` the slice count is only in the private element (0019,100A); with it,
    a CSA image header (0029,1010) states NumberOfImagesInMosaic and SliceNormalVector,
    as Siemens scanners write it (and as dcm2niix needs it). ``descending`` stores the
    slices against ``cross(row, column)``: the CSA normal then points the other way.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, cols = tile
    tiles = math.ceil(math.sqrt(n_slices))
    stored = rng.integers(0, 4000, size=(cols, rows, n_slices)).astype(np.uint16)
    mosaic = np.zeros((rows * tiles, cols * tiles), dtype=np.uint16)
    for s in range(n_slices):
        r0, c0 = (s // tiles) * rows, (s % tiles) * cols
        mosaic[r0 : r0 + rows, c0 : c0 + cols] = stored[:, :, s].T
    row_dir, col_dir = orientation_cosines("oblique")
    normal = np.cross(row_dir, col_dir) * (-1.0 if descending else 1.0)
    if descending and not csa:
        raise ValueError("a descending mosaic needs the CSA SliceNormalVector")
    sp = (2.0, 2.5)  # row spacing, column spacing
    first = np.array([-30.0, -25.0, 12.0])
    # A mosaic's IPP names a virtual mosaic-sized slice centred on the real first slice.
    ipp = first - row_dir * sp[1] * (cols * tiles - cols) / 2 - col_dir * sp[0] * (rows * tiles - rows) / 2
    ds = base_dataset(
        generate_uid(), generate_uid(), generate_uid(), series_number=21, description="ep2d_bold_moco"
    )
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    ds.SliceThickness = "3"
    ds.SpacingBetweenSlices = "3.5"
    ds.PixelSpacing = _ds_str(list(sp))
    ds.ImageOrientationPatient = _ds_str(np.concatenate([row_dir, col_dir]))
    ds.ImagePositionPatient = _ds_str(ipp)
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    ds.add_new(0x0019100A, "US", n_slices)
    if csa:
        ds.Manufacturer = "SIEMENS"
        ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
        header = siemens_csa2(
            {
                "NumberOfImagesInMosaic": ("US", [str(n_slices)]),
                "SliceNormalVector": ("FD", [f"{v:.8f}" for v in normal]),
            }
        )
        ds.add_new(0x00291010, "OB", header)
    _image_pixels(ds, mosaic)
    path = out_dir / "mosaic.dcm"
    _finish(ds, MRImageStorage, path, None)
    affine_lps = np.eye(4)
    affine_lps[:3, 0], affine_lps[:3, 1], affine_lps[:3, 2] = row_dir * sp[1], col_dir * sp[0], normal * 3.5
    affine_lps[:3, 3] = first
    return [path], Truth(stored.astype(np.float32), LPS_TO_RAS @ affine_lps, str(ds.SeriesInstanceUID))
