"""Write a synthetic subject as a DICOM MR study (MR Image Storage, one file per slice).

One StudyInstanceUID and one FrameOfReferenceUID per subject; every UID is derived from
the subject's seed, so a seed gives the same study twice. Stored values are the
acquired stack's integers (uint16, no rescale); ADC is in 1e-6 mm^2/s.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.synth.acquisition import AcquiredSeries, AcquiredStack
from training.synth.vendors import Equipment, equipment, series_style

if TYPE_CHECKING:
    from pydicom import Dataset

    from training.synth.subject import SyntheticSubject

__all__ = ["MR_IMAGE_STORAGE", "series_folder_name", "write_series", "write_study"]

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
_LARMOR_MHZ_PER_T = 42.577478


def _uid(subject: SyntheticSubject, *parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["mrinode-synth", subject.subject_id, str(subject.seed), *map(str, parts)]))


def series_folder_name(index: int, sequence: str) -> str:
    """Folder of one series: ``<NN>_<SEQ>``."""
    return f"{index:02d}_{sequence}"


def _study_datetime(seed: int) -> dt.datetime:
    return dt.datetime(2024, 1, 1, 8, 0, 0) + dt.timedelta(days=seed % 700, minutes=(seed * 37) % 540)


def _study_dataset(subject: SyntheticSubject, equip: Equipment) -> Dataset:
    from pydicom import Dataset

    rng = np.random.default_rng([subject.seed, 77])
    when = _study_datetime(subject.seed)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = f"SYNTHETIC^{subject.subject_id.replace('-', '')}"
    ds.PatientID = subject.subject_id
    age = int(rng.integers(25, 80))
    ds.PatientBirthDate = f"{when.year - age}0101"
    ds.PatientSex = str(rng.choice(["F", "M"]))
    ds.PatientAge = f"{age:03d}Y"
    ds.PatientWeight = f"{float(rng.uniform(55, 95)):.1f}"
    ds.StudyInstanceUID = _uid(subject, "study")
    ds.StudyDate = when.strftime("%Y%m%d")
    ds.StudyTime = when.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = f"{subject.seed % 100000}"
    ds.AccessionNumber = f"SYN{subject.seed:08d}"
    ds.StudyDescription = "MRI BRAIN WITH AND WITHOUT CONTRAST"
    ds.Modality = "MR"
    ds.FrameOfReferenceUID = _uid(subject, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = equip.manufacturer
    ds.ManufacturerModelName = equip.model
    ds.SoftwareVersions = equip.software.split("\\") if "\\" in equip.software else equip.software
    ds.InstitutionName = "Synthetic Data Engine"
    ds.DeviceSerialNumber = "SYNTH0001"
    ds.StationName = "SYNTHMR"
    ds.MagneticFieldStrength = f"{subject.params['field_strength']:g}"
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    return ds


def _fmt(value: float) -> str:
    for digits in (10, 8, 6):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.6g}"


def _series_header(ds: Dataset, subject: SyntheticSubject, series: AcquiredSeries, number: int, equip: Equipment) -> None:
    p = series.protocol
    style = series_style(subject.params["vendor"], p)
    ds.SeriesInstanceUID = _uid(subject, "series", series.sequence)
    ds.SeriesNumber = number
    ds.SeriesDescription = style.description
    ds.ProtocolName = style.description
    when = _study_datetime(subject.seed) + dt.timedelta(minutes=3 * number)
    ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = when.strftime("%H%M%S")
    ds.ImageType = list(style.image_type)
    ds.ScanningSequence = list(style.scanning_sequence)
    ds.SequenceVariant = list(style.sequence_variant)
    ds.ScanOptions = list(style.scan_options) if style.scan_options else ""
    ds.MRAcquisitionType = p.acquisition
    ds.SequenceName = style.sequence_name
    ds.AngioFlag = "N"
    ds.RepetitionTime = _fmt(p.tr)
    ds.EchoTime = _fmt(p.te)
    if p.ti is not None:
        ds.InversionTime = _fmt(p.ti)
    ds.EchoTrainLength = p.echo_train_length
    ds.FlipAngle = _fmt(p.flip_deg)
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = _fmt(_LARMOR_MHZ_PER_T * float(subject.params["field_strength"]))
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.SpacingBetweenSlices = _fmt(p.slice_spacing_mm)
    ds.SliceThickness = _fmt(p.slice_thickness_mm)
    ds.PixelBandwidth = "200"
    ds.AcquisitionMatrix = [0, p.matrix, p.matrix, 0]
    ds.InPlanePhaseEncodingDirection = "ROW" if p.plane == "sagittal" else "COL"
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "100"
    ds.ReceiveCoilName = "Head_32" if equip.manufacturer == "SIEMENS" else "HEAD"
    ds.TransmitCoilName = "Body"
    ds.SAR = "0.5"
    ds.dBdt = "0"
    if p.contrast:
        ds.ContrastBolusAgent = "Gadobutrol (Gadovist)"
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = _fmt(round(0.1 * float(ds.PatientWeight), 1))
        ds.ContrastBolusTotalDose = ds.ContrastBolusVolume
        ds.ContrastBolusIngredient = "GADOLINIUM"
        ds.ContrastBolusIngredientConcentration = "604.72"
        ds.ContrastBolusStartTime = (when - dt.timedelta(minutes=4)).strftime("%H%M%S")


def _b_value_tags(ds: Dataset, vendor: str, b: float) -> None:
    ds.DiffusionBValue = float(b)
    if vendor == "siemens":
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", str(int(b)))
    elif vendor == "ge":
        ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS", [str(int(b)), "8", "0", "0"])
    elif vendor == "philips":
        ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x03, "FL", float(b))


def _write_slice(base: Dataset, subject: SyntheticSubject, stack: AcquiredStack, k: int, instance: int,
                 out: Path, vendor: str) -> Path:
    from pydicom import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

    ds = Dataset()
    ds.update(base)
    lps = stack.affine_lps
    sp = np.linalg.norm(lps[:3, :3], axis=0)
    row, col, normal = lps[:3, 0] / sp[0], lps[:3, 1] / sp[1], lps[:3, 2] / sp[2]
    position = lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + lps[:3, 3]
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = _uid(subject, "instance", base.SeriesInstanceUID, instance)
    ds.InstanceNumber = instance
    ds.AcquisitionNumber = 1
    ds.ImagePositionPatient = [_fmt(v) for v in position]
    ds.ImageOrientationPatient = [_fmt(v) for v in (*row, *col)]
    ds.PixelSpacing = [_fmt(sp[1]), _fmt(sp[0])]  # row spacing (between rows), column spacing
    ds.SliceLocation = _fmt(float(normal @ position))
    if stack.key in ("sagittal", "coronal", "axial"):
        ds.SliceThickness = base.SliceThickness
    if stack.b_value is not None:
        _b_value_tags(ds, vendor, stack.b_value)
        if vendor == "siemens":
            ds.SequenceName = f"*ep_b{int(stack.b_value)}" + ("t" if stack.b_value > 0 else "")
    pixels = np.ascontiguousarray(stack.data[:, :, k].T).astype(np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MR_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    path = out / f"IM_{instance:04d}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(subject: SyntheticSubject, series: AcquiredSeries, out_dir: Path, number: int) -> list[Path]:
    """Write one acquired series, one file per slice, as ``IM_0001.dcm ...``.

    Parameters
    ----------
    subject : SyntheticSubject
        Supplies seed, vendor and field strength.
    series : AcquiredSeries
        From :meth:`SyntheticSubject.acquire`.
    out_dir : Path
        The series folder (created).
    number : int
        SeriesNumber.

    Returns
    -------
    list of Path
        The files written, in instance order.
    """
    vendor = subject.params["vendor"]
    equip = equipment(vendor, float(subject.params["field_strength"]))
    base = _study_dataset(subject, equip)
    _series_header(base, subject, series, number, equip)
    data_max = max(float(s.data.max()) for s in series.stacks)
    hi = float(np.percentile(np.concatenate([s.data[::4, ::4, :].ravel() for s in series.stacks]), 99.5)) or data_max or 1.0
    base.WindowCenter = _fmt(hi / 2.0)
    base.WindowWidth = _fmt(max(hi, 1.0))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    instance = 1
    for stack in series.stacks:
        for k in range(stack.data.shape[2]):
            paths.append(_write_slice(base, subject, stack, k, instance, out_dir, vendor))
            instance += 1
    return paths


def write_study(subject: SyntheticSubject, out_dir: Path) -> dict[str, Path]:
    """Write every sequence of a subject as one DICOM study.

    Parameters
    ----------
    subject : SyntheticSubject
        From :func:`training.synth.generate_subject`.
    out_dir : Path
        ``<subject>/dicom``; series go to ``<NN>_<SEQ>/``.

    Returns
    -------
    dict of str to Path
        Series folder per sequence label value.
    """
    from training.synth.subject import SYNTH_SEQUENCES

    equip = equipment(subject.params["vendor"], float(subject.params["field_strength"]))
    folders: dict[str, Path] = {}
    ordered = [s for s in SYNTH_SEQUENCES if s in subject.protocols]
    for index, seq in enumerate(ordered, start=1):
        series = subject.acquire(seq)
        folder = out_dir / series_folder_name(index, seq.value)
        number = index if equip.series_number_step == 1 else index * equip.series_number_step + 1
        write_series(subject, series, folder, number)
        folders[seq.value] = folder
    return folders


