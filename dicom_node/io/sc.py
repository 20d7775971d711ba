"""Optional Secondary Capture images with the segmentation burned in.

For PACS viewers that cannot show a DICOM-SEG: one RGB Secondary Capture per slice
(by default only the slices that hold a label), the source slice windowed to 8 bits with
each segment blended in its display colour. It is a picture of the result, not a
measurement: the SEG and SR remain the results of record.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid

from dicom_node.io.codes import SegmentSpec
from dicom_node.io.volume import Volume

__all__ = ["burn_in", "orientation_letters", "write_overlay_sc"]


def orientation_letters(direction: np.ndarray) -> str:
    """Patient orientation letters of an LPS direction, most significant first (e.g. ``"LP"``).

    Parameters
    ----------
    direction : numpy.ndarray
        A unit vector in LPS.

    Returns
    -------
    str
        Up to three of ``L/R``, ``P/A``, ``H/F`` for components above 0.1.
    """
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    order = np.argsort(-np.abs(direction))
    out = [letters[a][0 if direction[a] > 0 else 1] for a in order if abs(direction[a]) > 0.1]
    return "".join(out) or "L"


def burn_in(
    image: np.ndarray,
    labels: np.ndarray,
    segments: Sequence[SegmentSpec],
    window: tuple[float, float],
    alpha: float = 0.4,
) -> np.ndarray:
    """Blend label colours into one slice.

    Parameters
    ----------
    image : numpy.ndarray
        One slice, shape ``(rows, columns)``.
    labels : numpy.ndarray
        Its labels, same shape.
    segments : sequence of SegmentSpec
        Label values and colours.
    window : (float, float)
        Grey values mapped to 0 and 255.
    alpha : float
        Opacity of the colours (0..1).

    Returns
    -------
    numpy.ndarray
        uint8 RGB, shape ``(rows, columns, 3)``.
    """
    lo, hi = window
    grey = np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., np.newaxis], 3, axis=2)
    for spec in segments:
        mask = labels == spec.label_value
        if mask.any():
            rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * np.asarray(spec.rgb, dtype=np.float32)
    return np.round(rgb).astype(np.uint8)


def write_overlay_sc(
    reference: Volume,
    labels: np.ndarray,
    segments: Sequence[SegmentSpec],
    *,
    series_number: int = 902,
    only_labelled_slices: bool = True,
    alpha: float = 0.4,
    window: tuple[float, float] | None = None,
    manufacturer: str = "mrinode",
    series_description: str = "mrinode overlay (not for diagnosis)",
    series_instance_uid: str | None = None,
) -> list[Dataset]:
    """Make Secondary Capture images of ``reference`` with ``labels`` burned in.

    Parameters
    ----------
    reference : Volume
        The series the labels live on (with its DICOM headers).
    labels : numpy.ndarray
        Integer label volume of ``reference.data``'s shape.
    segments : sequence of SegmentSpec
        Label values and colours.
    series_number : int
        SeriesNumber of the SC series.
    only_labelled_slices : bool
        Skip slices without any label.
    alpha : float
        Colour opacity.
    window : (float, float), optional
        Grey window; the 1st and 99.5th percentiles of the volume by default.

    Returns
    -------
    list of pydicom.Dataset
        highdicom ``SCImage`` objects in slice order (InstanceNumber 1..n).

    Raises
    ------
    ValueError
        Shape mismatch or a reference without DICOM headers (e.g. a resampled volume).
    """
    import highdicom as hd

    if labels.shape != reference.data.shape:
        raise ValueError(
            f"Label volume shape {labels.shape} differs from {reference.name}'s grid {reference.data.shape}."
        )
    if not reference.headers:
        raise ValueError(
            f"{reference.name} has no DICOM headers; burn the overlay into a series read from DICOM."
        )
    if window is None:
        lo, hi = np.percentile(reference.data, [1.0, 99.5])
        window = (float(lo), float(hi))
    row_dir = reference.affine_lps[:3, 0] / np.linalg.norm(reference.affine_lps[:3, 0])
    col_dir = reference.affine_lps[:3, 1] / np.linalg.norm(reference.affine_lps[:3, 1])
    spacing_i, spacing_j, _ = reference.spacing
    series_uid = series_instance_uid or generate_uid()
    out: list[Dataset] = []
    for k in range(reference.shape[2]):
        slice_labels = labels[:, :, k].T
        if only_labelled_slices and not slice_labels.any():
            continue
        rgb = burn_in(reference.data[:, :, k].T, slice_labels, segments, window, alpha)
        header = (
            reference.headers[k] if len(reference.headers) == reference.shape[2] else reference.headers[0]
        )
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=header,
            pixel_array=rgb,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=len(out) + 1,
            manufacturer=manufacturer,
            pixel_spacing=(float(spacing_j), float(spacing_i)),  # type: ignore[arg-type]
            patient_orientation=(orientation_letters(row_dir)[0], orientation_letters(col_dir)[0]),
        )
        # highdicom takes one letter per direction; DICOM allows the oblique form ("LP").
        sc.PatientOrientation = [orientation_letters(row_dir), orientation_letters(col_dir)]
        sc.SeriesDescription = series_description[:64]
        sc.BurnedInAnnotation = "NO"
        if not sc.get("BodyPartExamined", None):
            sc.BodyPartExamined = "HEAD"  # unpaired, so (General Series) Laterality is not required
        sc.ImageComments = "Segmentation overlay burned in; the DICOM-SEG and SR are the results of record."
        out.append(sc)
    return out
