"""Frames: one 2-D image in patient space, the unit every reader produces.

Single-frame (classic) instances give one frame each; Enhanced MR and Siemens mosaic
instances give many (see :mod:`dicom_node.io.enhanced` and :mod:`dicom_node.io.mosaic`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.tag import Tag

from dicom_node.io.errors import SeriesReadError
from dicom_node.io.volume import SliceRef

__all__ = ["Frame", "classic_frames", "decode_pixels", "number", "private_number", "private_vector"]


@dataclass
class Frame:
    """One 2-D image with its position in patient space.

    Attributes
    ----------
    ipp : numpy.ndarray
        ImagePositionPatient (LPS mm) of the centre of the first transmitted pixel.
    iop : numpy.ndarray
        ImageOrientationPatient: row direction cosines then column direction cosines.
    pixel_spacing : tuple of float
        ``(row spacing, column spacing)`` in mm (DICOM PixelSpacing order).
    shape : tuple of int
        ``(rows, columns)``.
    pixels : callable
        Returns the rescaled float32 pixels, shape ``(rows, columns)``.
    ref : SliceRef
        The source image (frame) reference.
    header : pydicom.Dataset
        The header the frame belongs to (no pixel data).
    b_value, b_vector, temporal, echo, acquisition, trigger : optional
        Keys that can split a 4-D series into 3-D volumes.
    thickness : float or None
        SpacingBetweenSlices or SliceThickness, used for single-slice volumes.
    normal : numpy.ndarray or None
        Slice normal when the vendor states it (mosaic); ``None`` means
        ``cross(row, column)``.
    """

    ipp: np.ndarray
    iop: np.ndarray
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int]
    pixels: Callable[[], np.ndarray]
    ref: SliceRef
    header: Dataset
    b_value: float | None = None
    b_vector: tuple[float, float, float] | None = None
    temporal: float | None = None
    echo: float | None = None
    acquisition: float | None = None
    trigger: float | None = None
    thickness: float | None = None
    normal: np.ndarray | None = None


def number(value: Any) -> float | None:
    """Return a float from a DS/IS/str/bytes/multi-value element value, or ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii").strip("\x00 ").split("\\")[0]
        except UnicodeDecodeError:
            return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return number(value[0]) if len(value) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def private_number(ds: Dataset, tag: int, binary: str | None = None) -> float | None:
    """Read a numeric private element that may arrive as UN bytes.

    Parameters
    ----------
    ds : pydicom.Dataset
        The dataset.
    tag : int
        The element tag, e.g. ``0x0019100C``.
    binary : str, optional
        A :mod:`struct` format (``"<H"``) for binary VRs delivered as UN bytes.

    Returns
    -------
    float or None
        The value, or ``None`` when absent or unreadable.
    """
    elem = ds.get(Tag(tag))
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes) and binary is not None and len(value) == struct.calcsize(binary):
        return float(struct.unpack(binary, value)[0])
    return number(value)


def private_vector(ds: Dataset, tag: int) -> tuple[float, float, float] | None:
    """Read a 3-vector (FD or DS) private element that may arrive as UN bytes."""
    elem = ds.get(Tag(tag))
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        if len(value) == 24:
            x, y, z = struct.unpack("<3d", value)
            return float(x), float(y), float(z)
        try:
            parts = value.decode("ascii").strip("\x00 ").split("\\")
            return float(parts[0]), float(parts[1]), float(parts[2])
        except (UnicodeDecodeError, ValueError, IndexError):
            return None
    try:
        return float(value[0]), float(value[1]), float(value[2])
    except (TypeError, ValueError, IndexError):
        return None


#: What pydicom and its plugins raise for data they cannot decode (or that is short).
_DECODE_ERRORS = (RuntimeError, NotImplementedError, ValueError, AttributeError, KeyError, IndexError, TypeError)


def decode_pixels(ds: Dataset) -> np.ndarray:
    """Decode a dataset's pixel data, refusing what cannot be decoded with a clear error.

    Parameters
    ----------
    ds : pydicom.Dataset
        A dataset with pixel data.

    Returns
    -------
    numpy.ndarray
        The stored values (no rescale), as pydicom returns them.

    Raises
    ------
    SeriesReadError
        No pixel data, colour data, or a transfer syntax no installed plugin decodes.
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise SeriesReadError(ds, "an instance has no pixel data (not an image)")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise SeriesReadError(
            ds, f"colour images ({ds.get('PhotometricInterpretation', '?')}) are not supported"
        )
    ts = ds.file_meta.get("TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
    try:
        arr: np.ndarray = ds.pixel_array
    # pydicom raises any of these when no plugin decodes the syntax or the data is short; a
    # decoder written in Rust (pylibjpeg-rle) panics on some malformed data, and pyo3's
    # PanicException derives from BaseException (tests/fuzz/findings/reader-rle-decoder-panic).
    except BaseException as exc:
        if not isinstance(exc, _DECODE_ERRORS) and type(exc).__name__ != "PanicException":
            raise
        name = getattr(ts, "name", str(ts))
        raise SeriesReadError(
            ds, f"pixel data in transfer syntax {name!r} could not be decoded ({exc})"
        ) from None
    return arr


def _rescale(ds: Dataset) -> tuple[float, float]:
    slope = number(ds.get("RescaleSlope", None))
    intercept = number(ds.get("RescaleIntercept", None))
    return (1.0 if slope is None or slope == 0 else slope), (0.0 if intercept is None else intercept)


def _require(ds: Dataset, keyword: str) -> Any:
    value = ds.get(keyword, None)
    if value is None or value == "":
        raise SeriesReadError(ds, f"an instance has no {keyword}, so it has no position in patient space")
    return value


def classic_frames(ds: Dataset) -> list[Frame]:
    """Make the frame of a single-frame MR/CT/etc. image instance.

    The dataset's pixel data are decoded and then removed from it, so ``ds`` becomes
    the frame's header.

    Parameters
    ----------
    ds : pydicom.Dataset
        A single-frame image instance (read with pixel data).

    Returns
    -------
    list of Frame
        One frame.

    Raises
    ------
    SeriesReadError
        Missing geometry, pixel data, or an undecodable transfer syntax.
    """
    iop = np.array([float(v) for v in _require(ds, "ImageOrientationPatient")], dtype=np.float64)
    ipp = np.array([float(v) for v in _require(ds, "ImagePositionPatient")], dtype=np.float64)
    spacing = [float(v) for v in _require(ds, "PixelSpacing")]
    if iop.shape != (6,) or ipp.shape != (3,) or len(spacing) != 2:
        raise SeriesReadError(
            ds, "an instance has malformed ImageOrientationPatient, ImagePositionPatient or PixelSpacing"
        )
    raw = decode_pixels(ds)
    if raw.ndim != 2:
        raise SeriesReadError(ds, f"an instance has pixel data of shape {raw.shape}, expected one 2-D frame")
    slope, intercept = _rescale(ds)
    arr = raw.astype(np.float32)
    if slope != 1.0 or intercept != 0.0:
        arr = arr * np.float32(slope) + np.float32(intercept)
    for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if kw in ds:
            delattr(ds, kw)
    b_value = number(ds.get("DiffusionBValue", None))
    if b_value is None:
        b_value = private_number(ds, 0x0019100C)  # Siemens B_value
    if b_value is None:
        b_value = private_number(ds, 0x20011003, "<f")  # Philips diffusion b-factor (FL)
    if b_value is None and Tag(0x00431039) in ds:
        b_value = private_number(ds, 0x00431039)  # GE slop_int_6: b-value (+1e9 offsets)
        if b_value is not None and b_value >= 1e9:
            b_value = b_value % 1e9
    b_vec_raw = ds.get("DiffusionGradientOrientation", None)
    b_vector = tuple(float(v) for v in b_vec_raw) if b_vec_raw else private_vector(ds, 0x0019100E)
    thickness = number(ds.get("SpacingBetweenSlices", None)) or number(ds.get("SliceThickness", None))
    return [
        Frame(
            ipp=ipp,
            iop=iop,
            pixel_spacing=(spacing[0], spacing[1]),
            shape=(int(arr.shape[0]), int(arr.shape[1])),
            pixels=lambda a=arr: a,  # type: ignore[misc]
            ref=(str(ds.SOPClassUID), str(ds.SOPInstanceUID), None),
            header=ds,
            b_value=b_value,
            b_vector=b_vector if b_vector is None or len(b_vector) == 3 else None,  # type: ignore[arg-type]
            temporal=number(ds.get("TemporalPositionIdentifier", None)),
            echo=number(ds.get("EchoNumbers", None)),
            acquisition=number(ds.get("AcquisitionNumber", None)),
            trigger=number(ds.get("TriggerTime", None)),
            thickness=thickness,
        )
    ]
