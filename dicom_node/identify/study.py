"""Identify every series of a study given as a folder or a list of files.

Files are read once (headers only, pixel data skipped) and grouped by
SeriesInstanceUID, the same key as :func:`dicom_node.io.grouping.group_series`; this
module keeps its own single pass so that unreadable files are reported as a row rather
than dropped, and so that the receive path never imports the imaging stack. A non-MR or
broken series never raises: its row carries ``UNKNOWN`` and an ``error`` sentence.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_node.identify.evidence import DEFAULT_THRESHOLD, Identification, SeriesIdentification
from dicom_node.identify.fusion import PixelClassifier
from dicom_node.identify.header import has_contrast_agent
from dicom_node.identify.series import identify_series
from dicom_node.io.grouping import iter_files
from dicom_node.logs import uid_tag
from dicom_node.sequences import SequenceLabel

__all__ = ["identify_headers", "identify_study", "load_pixels", "read_headers"]

log = logging.getLogger(__name__)

#: File suffixes that are never DICOM (sidecars, NIfTI, notes): skipped silently.
_NOT_DICOM_SUFFIXES = frozenset({".json", ".txt", ".md", ".nii", ".gz", ".png", ".jpg", ".csv", ".log", ".xml", ".html"})

#: How many central slices the pixel path reads per series.
PIXEL_SLICES = 12


def read_headers(files: Sequence[Path]) -> tuple[dict[str, list[tuple[Path, Dataset]]], list[str]]:
    """Read headers (no pixel data) and group them by SeriesInstanceUID.

    Parameters
    ----------
    files : sequence of Path
        Candidate DICOM files.

    Returns
    -------
    (dict, list of str)
        Series UID → [(path, dataset)], and one sentence per file that could not be read.
    """
    series: dict[str, list[tuple[Path, Dataset]]] = {}
    problems: list[str] = []
    for path in files:
        if path.name.upper() == "DICOMDIR" or path.suffix.lower() in _NOT_DICOM_SUFFIXES:
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError) as exc:
            problems.append(f"{path.name} is not a readable DICOM file ({type(exc).__name__}).")
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            problems.append(f"{path.name} has no SeriesInstanceUID; it is not an image instance.")
            continue
        series.setdefault(uid, []).append((path, ds))
    return series, problems


def _slice_order(items: Sequence[tuple[Path, Dataset]]) -> list[tuple[Path, Dataset]]:
    def key(item: tuple[Path, Dataset]) -> tuple[float, int]:
        ds = item[1]
        iop = ds.get("ImageOrientationPatient")
        ipp = ds.get("ImagePositionPatient")
        pos, number = 0.0, 0
        try:
            if iop is not None and ipp is not None and len(iop) == 6 and len(ipp) == 3:
                normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
                pos = float(np.dot(normal, np.asarray(ipp, float)))
            number = int(ds.get("InstanceNumber", 0) or 0)
        except (TypeError, ValueError):
            pass  # malformed geometry or numbering: keep the file order
        return pos, number

    return sorted(items, key=key)


def _highest_b_value(items: Sequence[tuple[Path, Dataset]]) -> Sequence[tuple[Path, Dataset]]:
    """Keep the instances of the highest b-value when a series mixes b-values (DWI: the trace image)."""
    by_b: dict[float, list[tuple[Path, Dataset]]] = {}
    for item in items:
        b = item[1].get("DiffusionBValue")
        try:
            key = float(b) if b not in (None, "") else -1.0
        except (TypeError, ValueError):
            key = -1.0
        by_b.setdefault(key, []).append(item)
    if len(by_b) < 2:
        return items
    return by_b[max(by_b)]


def load_pixels(items: Sequence[tuple[Path, Dataset]], max_slices: int = PIXEL_SLICES) -> np.ndarray | None:
    """Read up to ``max_slices`` central slices of a series as a float32 (slices, rows, cols) array.

    Parameters
    ----------
    items : sequence of (Path, Dataset)
        The series' files with their headers.
    max_slices : int
        How many central slices to read (multi-frame: frames).

    Returns
    -------
    numpy.ndarray or None
        Rescaled pixel values (of the highest b-value when the series mixes several), or
        ``None`` when the series has no usable single-plane
        grey-scale pixels (mosaic, colour, mixed sizes, undecodable).
    """
    ordered = _slice_order(_highest_b_value(items))
    first = ordered[0][1]
    if "MOSAIC" in [str(v).upper() for v in first.get("ImageType", [])] or first.get("SamplesPerPixel", 1) != 1:
        return None
    if len(ordered) == 1:
        chosen = ordered
    else:
        mid = len(ordered) // 2
        lo = max(0, mid - max_slices // 2)
        chosen = ordered[lo : lo + max_slices]
    slices: list[np.ndarray] = []
    try:
        for path, _ in chosen:
            ds = pydicom.dcmread(path)
            arr = ds.pixel_array.astype(np.float32)
            slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
            intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
            arr = arr * slope + intercept
            if arr.ndim == 2:
                slices.append(arr)
            elif arr.ndim == 3:
                mid = arr.shape[0] // 2
                lo = max(0, mid - max_slices // 2)
                slices.extend(arr[lo : lo + max_slices])
    # pixel decoding fails in many library-specific ways (missing codec, truncated data);
    # any of them means "no pixels for this series", never a crash of the study.
    except Exception as exc:
        log.warning("pixels of %s could not be decoded (%s); header only.", uid_tag(str(first.get("SeriesInstanceUID", ""))), type(exc).__name__)
        return None
    if not slices or len({s.shape for s in slices}) != 1:
        return None
    return np.stack(slices)


def _row(uid: str, items: Sequence[tuple[Path, Dataset]], ident: Identification, error: str | None) -> SeriesIdentification:
    first = items[0][1]
    number = first.get("SeriesNumber")
    try:
        series_number = int(number) if number not in (None, "") else None
    except (TypeError, ValueError):
        series_number = None
    return SeriesIdentification(
        series_uid=uid,
        series_number=series_number,
        description=str(first.get("SeriesDescription", "") or ""),
        modality=str(first.get("Modality", "") or ""),
        identification=ident,
        error=error,
        n_instances=len(items),
    )


def identify_study(
    paths_or_dir: str | Path | Iterable[str | Path],
    *,
    use_pixels: bool = True,
    classifier: PixelClassifier | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[SeriesIdentification]:
    """Identify the sequence of every series under a folder or in a list of files.

    Parameters
    ----------
    paths_or_dir : str, Path or iterable of those
        A study folder (searched recursively) or files.
    use_pixels : bool
        Also run the pixel classifier and fuse (loads the shipped bundle once when
        ``classifier`` is not given; falls back to headers with a note if it cannot).
    classifier : PixelClassifier, optional
        A loaded pixel classifier.
    threshold : float
        Below this confidence a series is ``UNKNOWN``.

    Returns
    -------
    list of SeriesIdentification
        One per series, by series number; unreadable files come last as one row with
        an ``error`` and no series UID.
    """
    series, problems = read_headers(iter_files(paths_or_dir))
    return identify_headers(series, problems, use_pixels=use_pixels, classifier=classifier, threshold=threshold)


def identify_headers(
    series: dict[str, list[tuple[Path, Dataset]]],
    problems: Sequence[str] = (),
    *,
    use_pixels: bool = True,
    classifier: PixelClassifier | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[SeriesIdentification]:
    """Identify every series from headers already read (see :func:`read_headers`).

    Parameters
    ----------
    series : dict
        Series UID to its ``(path, header)`` pairs, as :func:`read_headers` returns them.
    problems : sequence of str
        One sentence per file that could not be read (one row says them).
    use_pixels, classifier, threshold
        As for :func:`identify_study`.

    Returns
    -------
    list of SeriesIdentification
        As :func:`identify_study` returns them.
    """
    if use_pixels and classifier is None and series:
        from dicom_node.identify.series import default_classifier

        classifier = default_classifier()
    records_contrast = any(
        has_contrast_agent(str(ds.get("ContrastBolusAgent", "") or "")) for items in series.values() for _, ds in items[:1]
    )
    rows: list[SeriesIdentification] = []
    for uid, items in series.items():
        headers = [ds for _, ds in items]
        modality = str(headers[0].get("Modality", "") or "")
        error: str | None = None
        if modality != "MR":
            error = f"series {uid_tag(uid)} is {modality or 'of unknown modality'}, not MR; not identified."
        pixels = None
        if use_pixels and classifier is not None and error is None:
            pixels = load_pixels(items)
        try:
            ident = identify_series(
                headers, pixels, classifier=classifier, threshold=threshold, study_records_contrast=records_contrast
            )
        # one broken series must not stop the study: its row records the failure instead.
        except Exception as exc:
            log.warning("series %s could not be identified: %s", uid_tag(uid), exc)
            error = f"series {uid_tag(uid)} could not be identified ({type(exc).__name__}: {exc})."
            ident = Identification(SequenceLabel.UNKNOWN, 0.0, [error], "header", SequenceLabel.UNKNOWN)
        rows.append(_row(uid, items, ident, error))
    rows.sort(key=lambda r: (r.series_number is None, r.series_number or 0, r.description))
    if problems:
        ident = Identification(SequenceLabel.UNKNOWN, 0.0, list(problems), "header", SequenceLabel.UNKNOWN)
        rows.append(
            SeriesIdentification("", None, "(unreadable files)", "", ident, f"{len(problems)} file(s) could not be read: " + " ".join(problems[:3]), len(problems))
        )
    return rows
