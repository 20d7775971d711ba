"""Small, valid MR Image Storage files made with pydicom, for receive and export tests.

These are test fixtures (a bright square on a noisy background), not synthetic MRI;
the physics-based engine lives in ``training/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

__all__ = ["make_mr_dataset", "write_mr_series"]


def make_mr_dataset(
    *,
    study_uid: str,
    series_uid: str,
    instance_number: int,
    size: int = 64,
    frame_of_reference_uid: str | None = None,
    series_description: str = "AX T1",
    sop_uid: str | None = None,
    seed: int = 0,
) -> Dataset:
    """Build one axial MR slice as a pydicom dataset with file meta.

    Parameters
    ----------
    study_uid, series_uid : str
        The Study and Series Instance UIDs.
    instance_number : int
        1-based slice number; also sets the slice position (1 mm apart).
    size : int
        Rows and columns.
    frame_of_reference_uid : str, optional
        Shared by every slice of a series (generated if omitted).
    series_description : str
        Series Description (the sequence identifier reads it).
    sop_uid : str, optional
        The SOP Instance UID (generated if omitted).
    seed : int
        Noise seed.

    Returns
    -------
    Dataset
        A dataset ready for ``save_as(..., enforce_file_format=True)``.
    """
    sop_uid = sop_uid if sop_uid is not None else str(generate_uid())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference_uid or str(generate_uid())
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "PHANTOM01"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.ContentDate = "20260101"
    ds.ContentTime = "120000"
    ds.AccessionNumber = "ACC0001"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = "MR"
    ds.Manufacturer = "mrinode tests"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.SeriesDescription = series_description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "BRAIN"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = 500.0
    ds.EchoTime = 15.0
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = 1.5
    ds.SliceThickness = 1.0
    ds.SpacingBetweenSlices = 1.0
    ds.PixelSpacing = [1.0, 1.0]
    ds.ImagePositionPatient = [-size / 2.0, -size / 2.0, float(instance_number - 1)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = float(instance_number - 1)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(seed + instance_number)
    img = rng.integers(0, 200, size=(size, size), dtype=np.uint16)
    q = size // 4
    img[q : 3 * q, q : 3 * q] += 1000
    ds.PixelData = img.tobytes()
    return ds


def write_mr_series(
    out_dir: Path,
    n: int,
    *,
    size: int = 64,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_description: str = "AX T1",
) -> tuple[str, list[Path]]:
    """Write ``n`` slices of one MR series as Part 10 files.

    Parameters
    ----------
    out_dir : Path
        The folder (created if missing); files are named ``IM00001.dcm`` and so on.
    n : int
        Number of slices.
    size : int
        Rows and columns of each slice.
    study_uid, series_uid : str, optional
        UIDs to use (generated if omitted).
    series_description : str
        Series Description.

    Returns
    -------
    tuple
        The Study Instance UID and the list of written paths, in slice order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    for_uid = generate_uid()
    paths: list[Path] = []
    for i in range(1, n + 1):
        ds = make_mr_dataset(
            study_uid=study_uid,
            series_uid=series_uid,
            instance_number=i,
            size=size,
            frame_of_reference_uid=for_uid,
            series_description=series_description,
        )
        path = out_dir / f"IM{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study_uid, paths
