"""Frames of multi-frame (Enhanced MR and other functional-group) instances."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from pydicom import Dataset

from dicom_node.io.errors import SeriesReadError
from dicom_node.io.frames import Frame, decode_pixels, number

__all__ = ["enhanced_frames", "functional_group_value", "is_enhanced"]


def is_enhanced(ds: Dataset) -> bool:
    """Whether ``ds`` describes its frames with per-frame functional groups."""
    return "PerFrameFunctionalGroupsSequence" in ds


def functional_group_value(ds: Dataset, frame_index: int, sequence: str, keyword: str) -> Any:
    """Look ``keyword`` up in ``sequence`` of the per-frame, then the shared, functional groups.

    Parameters
    ----------
    ds : pydicom.Dataset
        A multi-frame dataset.
    frame_index : int
        0-based frame index.
    sequence : str
        Functional group macro keyword, e.g. ``"PlanePositionSequence"``.
    keyword : str
        Attribute inside it, e.g. ``"ImagePositionPatient"``.

    Returns
    -------
    object or None
        The value, or ``None`` when neither group has it.
    """
    groups = []
    per = ds.get("PerFrameFunctionalGroupsSequence", None)
    if per is not None and frame_index < len(per):
        groups.append(per[frame_index])
    shared = ds.get("SharedFunctionalGroupsSequence", None)
    if shared:
        groups.append(shared[0])
    for group in groups:
        seq = group.get(sequence, None)
        if seq:
            value = seq[0].get(keyword, None)
            if value is not None and value != "":
                return value
    return None


def enhanced_frames(ds: Dataset) -> list[Frame]:
    """Make one frame per frame of a multi-frame instance.

    Pixel data are decoded once (on the first frame's request) and then removed from the
    dataset, which becomes every frame's header.

    Parameters
    ----------
    ds : pydicom.Dataset
        A multi-frame instance with functional groups (read with pixel data).

    Returns
    -------
    list of Frame
        One per frame, in stored order.

    Raises
    ------
    SeriesReadError
        A frame without position, orientation or spacing, or undecodable pixel data.
    """
    n = int(ds.get("NumberOfFrames", 1) or 1)
    raw = decode_pixels(ds)
    if n == 1 and raw.ndim == 2:
        raw = raw[np.newaxis]
    if raw.ndim != 3 or raw.shape[0] != n:
        raise SeriesReadError(ds, f"pixel data of shape {raw.shape} do not hold NumberOfFrames={n} frames")
    for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if kw in ds:
            delattr(ds, kw)

    @cache
    def load(index: int) -> np.ndarray:
        slope = number(functional_group_value(ds, index, "PixelValueTransformationSequence", "RescaleSlope"))
        if slope is None:
            slope = number(ds.get("RescaleSlope", None))
        intercept = number(
            functional_group_value(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
        )
        if intercept is None:
            intercept = number(ds.get("RescaleIntercept", None))
        arr = raw[index].astype(np.float32)
        if slope not in (None, 0.0, 1.0) or intercept not in (None, 0.0):
            arr = arr * np.float32(slope or 1.0) + np.float32(intercept or 0.0)
        return arr

    frames: list[Frame] = []
    for index in range(n):
        ipp = functional_group_value(ds, index, "PlanePositionSequence", "ImagePositionPatient")
        iop = functional_group_value(ds, index, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = functional_group_value(ds, index, "PixelMeasuresSequence", "PixelSpacing")
        if ipp is None or iop is None or spacing is None:
            raise SeriesReadError(
                ds, f"frame {index + 1} has no plane position, plane orientation or pixel spacing"
            )
        thickness = number(functional_group_value(ds, index, "PixelMeasuresSequence", "SpacingBetweenSlices"))
        thickness = thickness or number(
            functional_group_value(ds, index, "PixelMeasuresSequence", "SliceThickness")
        )
        b_value = number(functional_group_value(ds, index, "MRDiffusionSequence", "DiffusionBValue"))
        direction = None
        diff = functional_group_value(ds, index, "MRDiffusionSequence", "DiffusionGradientDirectionSequence")
        if diff:
            vec = diff[0].get("DiffusionGradientOrientation", None)
            if vec is not None and len(vec) == 3:
                direction = (float(vec[0]), float(vec[1]), float(vec[2]))
        frames.append(
            Frame(
                ipp=np.array([float(v) for v in ipp], dtype=np.float64),
                iop=np.array([float(v) for v in iop], dtype=np.float64),
                pixel_spacing=(float(spacing[0]), float(spacing[1])),
                shape=(int(raw.shape[1]), int(raw.shape[2])),
                pixels=lambda i=index: load(i),  # type: ignore[misc]
                ref=(str(ds.SOPClassUID), str(ds.SOPInstanceUID), index + 1),
                header=ds,
                b_value=b_value,
                b_vector=direction,
                temporal=number(
                    functional_group_value(ds, index, "FrameContentSequence", "TemporalPositionIndex")
                ),
                echo=number(functional_group_value(ds, index, "MREchoSequence", "EffectiveEchoTime")),
                trigger=number(
                    functional_group_value(
                        ds, index, "CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime"
                    )
                ),
                thickness=thickness,
            )
        )
    return frames
