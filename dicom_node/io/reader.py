"""Read a DICOM series into :class:`~dicom_node.io.volume.Volume` objects."""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError

from dicom_node.io.enhanced import enhanced_frames, functional_group_value, is_enhanced
from dicom_node.io.errors import SeriesReadError
from dicom_node.io.frames import Frame, classic_frames, number, private_number
from dicom_node.io.geometry import split_frames, stack_frames
from dicom_node.io.mosaic import is_mosaic, mosaic_frames
from dicom_node.io.volume import Volume

__all__ = ["NON_IMAGE_MODALITIES", "SeriesReadError", "read_series", "series_meta"]

log = logging.getLogger(__name__)

#: Modalities of derived, non-image objects (a SEG has pixel data but is not an image).
NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "PR", "KO", "RTSTRUCT", "REG", "DOC", "RWV", "PLAN"})

#: Functional group sequences searched for acquisition parameters of multi-frame images.
_FG_LOOKUP: dict[str, tuple[tuple[str, str], ...]] = {
    "RepetitionTime": (("MRTimingAndRelatedParametersSequence", "RepetitionTime"),),
    "FlipAngle": (("MRTimingAndRelatedParametersSequence", "FlipAngle"),),
    "EchoTime": (("MREchoSequence", "EffectiveEchoTime"),),
    "InversionTime": (("MRModifierSequence", "InversionTimes"),),
}


def _value(ds: Dataset, keyword: str) -> Any:
    value = ds.get(keyword, None)
    if (value is None or value == "") and is_enhanced(ds):
        for seq, kw in _FG_LOOKUP.get(keyword, ()):
            value = functional_group_value(ds, 0, seq, kw)
            if value is not None:
                break
    return None if value == "" else value


def series_meta(ds: Dataset) -> dict[str, Any]:
    """Acquisition parameters of a series, from one of its instances.

    Parameters
    ----------
    ds : pydicom.Dataset
        An instance header.

    Returns
    -------
    dict
        Keys ``tr``, ``te``, ``ti``, ``flip_angle`` (ms, ms, ms, degrees), ``b_value``,
        ``manufacturer``, ``model``, ``field_strength`` (T), ``sequence_name``,
        ``series_description``, ``series_number``, ``modality``, ``study_uid``,
        ``image_type``; ``None`` where the header has none.
    """

    def text(keyword: str) -> str | None:
        v = _value(ds, keyword)
        return None if v is None else str(v)

    series_number = number(ds.get("SeriesNumber", None))
    seq_name = text("SequenceName") or text("PulseSequenceName")
    image_type = ds.get("ImageType", None)
    return {
        "tr": number(_value(ds, "RepetitionTime")),
        "te": number(_value(ds, "EchoTime")),
        "ti": number(_value(ds, "InversionTime")),
        "flip_angle": number(_value(ds, "FlipAngle")),
        "b_value": number(ds.get("DiffusionBValue", None))
        if "DiffusionBValue" in ds
        else private_number(ds, 0x0019100C),
        "manufacturer": text("Manufacturer"),
        "model": text("ManufacturerModelName"),
        "field_strength": number(_value(ds, "MagneticFieldStrength")),
        "sequence_name": seq_name,
        "series_description": text("SeriesDescription"),
        "series_number": None if series_number is None else int(series_number),
        "modality": text("Modality"),
        "study_uid": text("StudyInstanceUID"),
        "image_type": [str(v) for v in image_type] if image_type else None,
    }


def _frames_of(ds: Dataset) -> list[Frame]:
    if is_enhanced(ds):
        return enhanced_frames(ds)
    if is_mosaic(ds):
        return mosaic_frames(ds)
    if int(number(ds.get("NumberOfFrames", None)) or 1) > 1:
        raise SeriesReadError(
            ds, "a multi-frame instance has no per-frame functional groups, so its frames have no positions"
        )
    return classic_frames(ds)


#: What pydicom raises, while reading a file or decoding one of its values, for bytes that are
#: not well-formed DICOM (found by tests/fuzz/test_reader_fuzz.py).
_MALFORMED = (InvalidDicomError, OSError, EOFError, ValueError, struct.error, KeyError, IndexError, TypeError,
              OverflowError, NotImplementedError, BytesLengthException)


def _read(path: Path) -> Dataset:
    """Read one file and decode every value now, so a malformed one fails here and not later.

    pydicom decodes values (sequences included) only when first touched: without this a bad
    length deep in a sequence raises from whichever line of the reader touches it first.
    """
    ds = pydicom.dcmread(path)
    for _ in ds.iterall():
        pass
    for _ in getattr(ds, "file_meta", None) or ():
        pass
    return ds


def _check_geometry(frame: Frame) -> None:
    """Refuse a frame whose position, orientation or spacing has the wrong number of values or is not finite.

    Every frame reader parses these from the header (per frame for Enhanced MR); a damaged
    value there must not reach the geometry code as a numpy error.
    """
    ok = (
        np.shape(frame.ipp) == (3,)
        and np.shape(frame.iop) == (6,)
        and len(frame.pixel_spacing) == 2
        and (frame.normal is None or np.shape(frame.normal) == (3,))
        and bool(np.all(np.isfinite(frame.ipp)) and np.all(np.isfinite(frame.iop)))
        and all(math.isfinite(v) and v > 0 for v in frame.pixel_spacing)
    )
    if not ok:
        raise SeriesReadError(
            frame.header, "a frame has a malformed ImagePositionPatient, ImageOrientationPatient or PixelSpacing"
        )


def read_series(paths: Iterable[str | Path]) -> list[Volume]:
    """Read the files of one series into volumes.

    Slices are ordered by their position along the slice normal (never by
    InstanceNumber); rescale slope and intercept are applied; Enhanced MR multi-frame
    and Siemens mosaic instances are cut into frames; a 4-D series is split by b-value,
    temporal position, echo, acquisition number or trigger time (see
    :func:`dicom_node.io.geometry.split_frames`).

    Parameters
    ----------
    paths : iterable of str or Path
        The files of one series (see :func:`dicom_node.io.grouping.group_series`).

    Returns
    -------
    list of Volume
        One volume, or one per split (``Volume.split`` such as ``"b1000"``).

    Raises
    ------
    SeriesReadError
        With a message naming the series (number, description, UID tag) and why: files
        from several series, not an image, no pixel data, undecodable transfer syntax,
        differing orientation or spacing, gantry tilt, missing slices, repeated positions.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise SeriesReadError(None, "no files were given")
    datasets: list[Dataset] = []
    for path in files:
        try:
            datasets.append(_read(path))
        except _MALFORMED as exc:
            raise SeriesReadError(
                datasets[0] if datasets else None,
                f"file {path.name} is not readable DICOM ({type(exc).__name__})",
            ) from None
    first = datasets[0]
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) != 1:
        raise SeriesReadError(first, f"the files belong to {len(uids)} different series")
    sop_uids = {str(ds.get("SOPInstanceUID", "")) for ds in datasets}
    if len(sop_uids) != len(datasets):
        raise SeriesReadError(first, "the same SOPInstanceUID occurs in more than one file")
    modality = str(first.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        raise SeriesReadError(first, f"it is a {modality} series (a derived object), not an image series")
    meta = series_meta(first)
    frames: list[Frame] = []
    for path, ds in zip(files, datasets, strict=True):
        if not ds.get("SOPClassUID", None) and hasattr(ds, "file_meta"):
            ds.SOPClassUID = ds.file_meta.get("MediaStorageSOPClassUID", None)
        if not ds.get("SOPClassUID", None) or not ds.get("SOPInstanceUID", None):
            raise SeriesReadError(
                first if first.get("SeriesNumber", None) is not None else ds,
                f"file {path.name} has no SOPClassUID or SOPInstanceUID (truncated, or not a stored instance)",
            )
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise SeriesReadError(ds, "it is not an image series (an instance has no pixel data)")
        try:
            frames.extend(_frames_of(ds))
        except SeriesReadError:
            raise
        except _MALFORMED as exc:  # a value pydicom decoded but that is not what its VR says (a DS of "0/9")
            raise SeriesReadError(ds, f"file {path.name} has a malformed value ({type(exc).__name__})") from None
    if uids == {""}:
        raise SeriesReadError(first, "its files have no SeriesInstanceUID")
    if not frames:
        raise SeriesReadError(first, "it holds no image frames")
    for frame in frames:
        _check_geometry(frame)
    volumes: list[Volume] = []
    for split, group in split_frames(frames):
        data, affine, ordered = stack_frames(group)
        headers: list[Dataset] = []
        for f in ordered:
            if not headers or f.header is not headers[-1] or not is_multiframe(f.header):
                headers.append(f.header)
        vol_meta = dict(meta)
        if split is not None and ordered[0].b_value is not None:
            vol_meta["b_value"] = ordered[0].b_value
        if ordered[0].b_vector is not None:
            vol_meta["b_vector"] = list(ordered[0].b_vector)
        volumes.append(
            Volume(
                data=data,
                affine=affine,
                series_uid=str(first.SeriesInstanceUID),
                frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "") or "") or None,
                slice_refs=[f.ref for f in ordered],
                headers=headers,
                meta=vol_meta,
                split=split,
            )
        )
    return volumes


def is_multiframe(ds: Dataset) -> bool:
    """Whether one instance holds several frames (Enhanced or mosaic)."""
    return is_enhanced(ds) or is_mosaic(ds)
