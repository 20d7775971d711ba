"""Write a NIfTI volume as a single-frame MR DICOM series (test fixture for real template brains)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

__all__ = ["write_volume_as_dicom"]

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_volume_as_dicom(data: np.ndarray, affine: np.ndarray, out_dir: Path, description: str = "T1 MPRAGE") -> list[Path]:
    """Write ``data`` (i, j, k; RAS affine) as one slice per ``k``; returns the file paths.

    Pixel ``(row r, column c)`` of slice ``k`` is voxel ``(c, r, k)``; the geometry follows
    the affine exactly (ImagePositionPatient per slice, ImageOrientationPatient, spacing).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    lps = _LPS @ np.asarray(affine, dtype=np.float64)
    sp = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    row_dir, col_dir = lps[:3, 0] / sp[0], lps[:3, 1] / sp[1]
    scaled = np.asarray(data, dtype=np.float64)
    scaled = np.clip(scaled / max(float(scaled.max()), 1e-6) * 4000.0, 0, 4095).astype(np.uint16)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(scaled.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Template^Brain", "TEMPLATE", "", "O"
        ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime = "20260101", "120000", "20260101", "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
        ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "MR", "mrinode tests", 1, k + 1
        ds.SeriesDescription = description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.PatientPosition, ds.BodyPartExamined = "HFS", "BRAIN"
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR\\IR", "SK\\SP\\MP", ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime, ds.EchoTime, ds.InversionTime, ds.FlipAngle = 2300.0, 2.98, 900.0, 9.0
        ds.EchoTrainLength, ds.MagneticFieldStrength = 1, 3.0
        ds.SliceThickness = float(sp[2])
        ds.SpacingBetweenSlices = float(sp[2])
        ds.PixelSpacing = [float(sp[1]), float(sp[0])]
        ds.ImagePositionPatient = [float(v) for v in (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.PositionReferenceIndicator = ""
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = scaled.shape[1], scaled.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.ascontiguousarray(scaled[:, :, k].T).tobytes()
        path = out_dir / f"IM{k + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
