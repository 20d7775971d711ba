"""One correction → arrays on one grid: the corrected label map and the sequences the model takes.

Every dataset is de-identified in memory (:class:`training.harvest.deid.Deidentifier`)
before it is written, and only de-identified files go to a private temporary folder, where
the node's imaging I/O reads them (:func:`dicom_node.io.reader.read_series`,
:func:`dicom_node.io.seg.read_seg_labels`). Sequences are identified from the original
headers in memory (:func:`dicom_node.identify.study.identify_headers`, header rules only),
since de-identification removes the series descriptions the rules read.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset

from training.harvest.deid import Deidentifier
from training.harvest.pacs import OrthancPacs
from training.harvest.select import Correction

__all__ = ["CaseArrays", "ConversionError", "convert_correction", "convert_unlabelled", "segment_label_values"]


class ConversionError(ValueError):
    """A correction that cannot become a training case, with a sentence saying why (no identifiers)."""


@dataclass
class CaseArrays:
    """A converted case: images and labels on the grid of the corrected series (RAS+ affine), and
    files kept beside them (the de-identified corrected SEG, ``correction-seg.dcm``)."""

    images: dict[str, np.ndarray]
    labels: np.ndarray | None
    affine: np.ndarray
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    correction: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def content_key(self) -> str:
        """SHA-256 of the arrays (labels, then images by name) and the grid: the de-duplication key."""
        h = hashlib.sha256()
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels, dtype=np.int16).tobytes())
        h.update(np.ascontiguousarray(self.affine, dtype=np.float64).round(4).tobytes())
        for name in sorted(self.images):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.images[name], dtype=np.float32).tobytes())
        return h.hexdigest()


def segment_label_values(seg: Dataset, label_codes: dict[str, int], label_names: dict[str, int]) -> dict[int, int]:
    """Segment number → label value, by the segment's property type code, else its label text.

    Raises
    ------
    ConversionError
        If a segment matches no label of the model.
    """
    out: dict[int, int] = {}
    for item in seg.get("SegmentSequence", []):
        number = int(item.SegmentNumber)
        types = item.get("SegmentedPropertyTypeCodeSequence", [])
        code = str(types[0].get("CodeValue", "")) if types else ""
        name = str(item.get("SegmentLabel", "") or "").strip().lower()
        if code in label_codes:
            out[number] = label_codes[code]
        elif name in label_names:
            out[number] = label_names[name]
        else:
            raise ConversionError(f"segment {number} ({name or 'no label'}, code {code or 'none'}) of the corrected SEG "
                                  f"matches no label of the model (codes {', '.join(sorted(label_codes))}).")
    return out


def _identify(datasets: dict[str, list[Dataset]]) -> dict[str, str]:
    """Series UID → sequence label, from the headers (rules only, no pixels)."""
    from dicom_node.identify.study import identify_headers
    from dicom_node.pipelines.analysis import select_series

    series = {uid: [(Path(f"{i}.dcm"), ds) for i, ds in enumerate(items)] for uid, items in datasets.items()}
    rows = identify_headers(series, use_pixels=False)
    return {row.series_uid: label for label, row in select_series(rows).items()}


def _read_deidentified(originals: dict[str, list[Dataset]], chosen: dict[str, str], deid: Deidentifier,
                       tmp: Path) -> dict[str, Any]:
    """De-identify the chosen series, write them to ``tmp`` and read them back as volumes (by label)."""
    from dicom_node.io.reader import read_series

    volumes = {}
    for label, uid in chosen.items():
        folder = tmp / label
        folder.mkdir()
        paths = []
        for i, ds in enumerate(originals[uid]):
            deid(ds)
            path = folder / f"{i:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        volumes[label] = read_series(paths)[0]
    return volumes


def _on_grid(volumes: dict[str, Any], reference: Any, channels: list[str]) -> tuple[dict[str, np.ndarray],
                                                                                    dict[str, dict[str, Any]]]:
    """The volumes resampled onto ``reference``'s grid, and their acquisition parameters (no identifiers)."""
    from dicom_node.io.resample import resample_to

    images: dict[str, np.ndarray] = {}
    meta: dict[str, dict[str, Any]] = {}
    for label in channels:
        if label not in volumes:
            continue
        vol = volumes[label]
        if vol.data.shape != reference.data.shape or not np.allclose(vol.affine, reference.affine, atol=1e-3):
            vol = resample_to(vol, reference, order=1)
        images[label] = np.asarray(vol.data, dtype=np.float32)
        m = volumes[label].meta
        meta[label] = {k: m.get(k) for k in ("tr", "te", "ti", "flip_angle", "field_strength", "manufacturer")
                       if m.get(k) is not None}
    return images, meta


def _study_series(pacs: OrthancPacs, study_id: str, channels: list[str]) -> tuple[dict[str, list[Dataset]],
                                                                                  dict[str, str], dict[str, str]]:
    """(series UID → datasets in memory, series UID → sequence label, label → chosen series UID)."""
    mr = [s for s in pacs.series(study_id) if s.modality == "MR" and s.instances]
    originals = {s.series_uid: list(pacs.series_datasets(s)) for s in mr}
    labels_by_uid = _identify(originals) if originals else {}
    chosen = {label: uid for uid, label in labels_by_uid.items() if label in channels}
    return originals, labels_by_uid, chosen


def convert_correction(pacs: OrthancPacs, corr: Correction, channels: list[str],
                       label_codes: dict[str, int], label_names: dict[str, int]) -> CaseArrays:
    """Download, de-identify and convert one correction.

    Parameters
    ----------
    pacs : OrthancPacs
        Where the study is.
    corr : Correction
        The correction (from :func:`training.harvest.select.find_corrections`).
    channels : list of str
        The sequences the model takes; all must be in the study.
    label_codes, label_names : dict
        SNOMED CT property type code → label value, and lower-case label name → label value.

    Returns
    -------
    CaseArrays

    Raises
    ------
    ConversionError
        A sequence the model needs is missing, or the SEG does not fit its source series.
    """
    from dicom_node.io.seg import read_seg_labels

    originals, labels_by_uid, chosen = _study_series(pacs, corr.study_id, channels)
    if corr.source_series_uid not in originals:
        raise ConversionError("the corrected SEG references a series that is not in the study (or is not MR).")
    source_label = labels_by_uid.get(corr.source_series_uid)
    if source_label not in channels:
        raise ConversionError("the corrected series could not be identified as one of the model's sequences "
                              f"({', '.join(channels)}).")
    chosen[str(source_label)] = corr.source_series_uid  # the corrected series itself wins its label
    missing = [c for c in channels if c not in chosen]
    if missing:
        raise ConversionError(f"the study lacks {', '.join(missing)} (the model takes {', '.join(channels)}).")
    deid = Deidentifier()
    seg = pacs.dataset(corr.correction.instances[0])
    numbers = segment_label_values(seg, label_codes, label_names)
    correction_info = {
        "manufacturer": str(corr.correction_header.get("Manufacturer", "") or ""),
        "node_manufacturer": str(corr.node_header.get("Manufacturer", "") or ""),
        "segments": {str(k): v for k, v in sorted(numbers.items())},
        "algorithm_types": sorted({str(i.get("SegmentAlgorithmType", "")) for i in seg.get("SegmentSequence", [])}),
    }
    with tempfile.TemporaryDirectory(prefix="mrinode-harvest-") as tmp:
        volumes = _read_deidentified(originals, chosen, deid, Path(tmp))
        reference = volumes[str(source_label)]
        deid(seg)
        buf = io.BytesIO()
        seg.save_as(buf, enforce_file_format=True)
        try:
            seg_numbers = read_seg_labels(seg, reference)
        except (ValueError, KeyError, AttributeError) as exc:
            raise ConversionError(f"the corrected SEG does not fit its source series ({type(exc).__name__}).") from None
    lut = np.zeros(max([0, *numbers]) + 1, dtype=np.int16)
    for number, value in numbers.items():
        lut[number] = value
    labels = lut[np.clip(seg_numbers, 0, len(lut) - 1)]
    images, meta = _on_grid(volumes, reference, channels)
    return CaseArrays(images=images, labels=labels, affine=np.asarray(reference.affine), meta=meta,
                      correction=correction_info, files={"correction-seg.dcm": buf.getvalue()})


def convert_unlabelled(pacs: OrthancPacs, study_id: str, channels: list[str]) -> CaseArrays:
    """Download, de-identify and convert the sequences of a study without labels (for pretraining).

    The sequences among ``channels`` that the study has are resampled onto the grid of the
    first of them (in ``channels`` order).

    Raises
    ------
    ConversionError
        The study has none of ``channels``.
    """
    originals, _, chosen = _study_series(pacs, study_id, channels)
    if not chosen:
        raise ConversionError(f"the study has none of {', '.join(channels)}.")
    with tempfile.TemporaryDirectory(prefix="mrinode-harvest-") as tmp:
        volumes = _read_deidentified(originals, chosen, Deidentifier(), Path(tmp))
    reference = volumes[next(c for c in channels if c in volumes)]
    images, meta = _on_grid(volumes, reference, channels)
    return CaseArrays(images=images, labels=None, affine=np.asarray(reference.affine), meta=meta)
