"""The brain-tumour pipeline: identify → select T1/T1C/T2/FLAIR → one grid → model → SEG + SR.

Reference it from the node configuration as ``"dicom_node.pipelines.tumour:run"``.
Options (the pipeline's ``options`` table):

``model``
    Bundle name or folder (default ``"brain-tumour-demo"``).
``models_dir``
    Extra folder searched for bundles.
``overlap``
    Sliding-window overlap (default: the card's).
``use_pixels``
    Let identification use the image-based classifier too (default true).
``labelmap``
    Write a LABELMAP SEG instead of BINARY (default false).

A study in which none of the model's sequences (or a required one) is found still gets an
SR, stating what was missing; never silence.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_node.logs import uid_tag
from dicom_node.pipelines import PipelineRequest, PipelineResult

__all__ = ["DEFAULT_MODEL", "run", "select_series"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "brain-tumour-demo"
#: Which selected series becomes the reference grid when several are present (finest wins first).
REFERENCE_PREFERENCE = ("T1C", "T1", "FLAIR", "T2")


@dataclass
class _Row:
    """Minimal series identification (used when ``dicom_node.identify`` cannot run)."""

    series_uid: str
    series_number: int | None
    description: str
    label: str
    confidence: float


def _identify(paths: list[Path], use_pixels: bool) -> list[Any]:
    try:
        from dicom_node.identify import identify_study
    except ImportError:  # identification package absent: fall back to series descriptions
        return _fallback_identify(paths)
    return [r for r in identify_study(paths, use_pixels=use_pixels) if r.series_uid]


def _fallback_identify(paths: list[Path]) -> list[Any]:
    import pydicom

    from dicom_node.io.grouping import group_series

    rows = []
    for uid, files in group_series(paths).items():
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        text = str(ds.get("SeriesDescription", "")).upper()
        label = "UNKNOWN"
        if "FLAIR" in text:
            label = "FLAIR"
        elif "T2" in text:
            label = "T2"
        elif "T1" in text:
            label = "T1C" if any(k in text for k in ("POST", "+C", "GD", "CONTRAST")) else "T1"
        rows.append(_Row(uid, ds.get("SeriesNumber"), str(ds.get("SeriesDescription", "")), label, 0.5))
    return rows


def select_series(rows: list[Any], channels: list[str]) -> dict[str, Any]:
    """Pick one series per wanted sequence: the most confident, then the one with most instances.

    Parameters
    ----------
    rows : list
        Series identifications (``label``, ``confidence``, ``series_uid``).
    channels : list of str
        The sequences the model takes.

    Returns
    -------
    dict
        Sequence label to its chosen row.
    """
    chosen: dict[str, Any] = {}
    for row in rows:
        label = str(row.label)
        if label not in channels:
            continue
        best = chosen.get(label)
        key = (float(row.confidence), int(getattr(row, "n_instances", 0) or 0))
        if best is None or key > (float(best.confidence), int(getattr(best, "n_instances", 0) or 0)):
            chosen[label] = row
    return chosen


def _reference_label(volumes: dict[str, Any]) -> str:
    import numpy as np

    def voxel(label: str) -> float:
        return abs(float(np.linalg.det(volumes[label].affine[:3, :3])))

    order = [lab for lab in REFERENCE_PREFERENCE if lab in volumes] + [lab for lab in volumes if lab not in REFERENCE_PREFERENCE]
    return min(order, key=lambda lab: (round(voxel(lab), 3), order.index(lab)))


def run(request: PipelineRequest) -> PipelineResult:
    """Segment brain tumour sub-regions in one study and write SEG + SR under ``request.out_dir``.

    Parameters
    ----------
    request : PipelineRequest
        The study's files, the output folder, options and device.

    Returns
    -------
    PipelineResult
        The written files (SEG and SR, or an SR alone when sequences were missing) and a
        summary: sequences used, missing, volume per label (mL), seconds per stage.

    Raises
    ------
    ValueError
        If the bundle cannot be loaded or no series of the study can be read (the message
        says which and why).
    """
    from dicom_node.io.codes import BRATS_SEGMENTS, AlgorithmSpec
    from dicom_node.io.errors import SeriesReadError
    from dicom_node.io.grouping import group_series
    from dicom_node.io.reader import read_series
    from dicom_node.io.resample import resample_to
    from dicom_node.io.seg import write_seg
    from dicom_node.io.sr import segment_volumes_ml, write_measurement_report
    from models.bundle import load_bundle
    from models.engine import get_engine

    opts = dict(request.options)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    search = [opts["models_dir"]] if opts.get("models_dir") else None
    bundle = load_bundle(str(opts.get("model", DEFAULT_MODEL)), search)
    card = bundle.card
    algorithm = AlgorithmSpec(name=card.name, version=card.version, source="mrinode")
    paths = [Path(p) for p in request.instance_paths]
    rows = _identify(paths, bool(opts.get("use_pixels", True)))
    seconds["identify"] = time.perf_counter() - t

    t = time.perf_counter()
    chosen = select_series(rows, list(card.channels))
    files = group_series(paths)
    volumes: dict[str, Any] = {}
    unreadable: list[str] = []
    for label, row in chosen.items():
        # A series the reader refuses (missing slices, tilt, ...) is treated as absent and
        # said in the SR; the model still runs on the others. Never a failed job for that.
        try:
            vols = read_series(files[row.series_uid])
        except SeriesReadError as exc:
            unreadable.append(f"{label} not used: {exc}")
            log.warning("tumour pipeline: %s series refused by the reader: %s", label, exc)
            continue
        volumes[label] = vols[0]
    missing_required = [s for s in card.required_sequences if s not in volumes]
    absent = [s for s in card.channels if s not in volumes]
    seconds["read"] = time.perf_counter() - t
    summary: dict[str, Any] = {
        "model": card.name,
        "model_version": card.version,
        "sequences_found": {str(r.label): r.description for r in rows},
        "sequences_used": {lab: volumes[lab].meta.get("series_description") or "" for lab in volumes},
        "missing": absent,
        "unreadable": unreadable,
        "seconds": seconds,
    }
    out_dir = Path(request.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not volumes or missing_required:
        return _missing_report(request, rows, files, card, algorithm, absent, missing_required, summary)

    t = time.perf_counter()
    ref_label = _reference_label(volumes)
    reference = volumes[ref_label]
    images = {lab: (vol.data if lab == ref_label else resample_to(vol, reference, order=1).data) for lab, vol in volumes.items()}
    seconds["resample"] = time.perf_counter() - t

    engine = get_engine(bundle.path, device=request.device, overlap=opts.get("overlap"))
    prediction = engine.predict(images, reference.affine)
    for stage, value in prediction.seconds.items():
        seconds[f"model_{stage}"] = value

    t = time.perf_counter()
    by_value = {s.label_value: s for s in BRATS_SEGMENTS}
    segments = [by_value[lab.value] for lab in card.labels if lab.value in by_value]
    seg = write_seg(prediction.labels, reference, segments, algorithm, labelmap=bool(opts.get("labelmap", False)))
    volumes_ml = segment_volumes_ml(prediction.labels, reference, segments)
    notes = [f"Sequences used: {', '.join(sorted(volumes))}."]
    if absent:
        notes.append(f"Not present, fed as empty channels: {', '.join(absent)}.")
    notes.extend(unreadable)
    names = {lab.value: lab.name for lab in card.labels}
    for value, needs in sorted(prediction.not_assessed.items()):
        notes.append(f"{names.get(value, f'Label {value}')} was not assessed: it needs {' or '.join(needs)}, "
                     f"and none was present.")
    if prediction.out_of_distribution:
        notes.append(f"The input looks unlike the model's training data (OOD score {prediction.ood_score:.2f} "
                     f"above {prediction.ood_threshold:.2f}); read the result with care.")
    notes.append(card.intended_use)
    sr = write_measurement_report(
        seg=seg, reference=reference, source_volumes=list(volumes.values()), segment_volumes_ml=volumes_ml,
        identifications=rows, algorithm=algorithm, notes=notes,
    )
    seg_path, sr_path = out_dir / "seg.dcm", out_dir / "sr.dcm"
    seg.save_as(seg_path)
    sr.save_as(sr_path)
    seconds["write"] = time.perf_counter() - t
    summary.update(
        reference_series=uid_tag(reference.series_uid),
        reference_sequence=ref_label,
        device=prediction.device,
        volumes_ml={s.label: round(volumes_ml[n], 3) for n, s in enumerate(segments, start=1)},
        total_ml=round(sum(volumes_ml.values()), 3),
        ood_score=prediction.ood_score,
        ood_threshold=prediction.ood_threshold,
    )
    log.info("tumour pipeline on study %s: %s, %.2f mL", uid_tag(request.study_uid), card.name, summary["total_ml"])
    return PipelineResult(outputs=[seg_path, sr_path], summary=summary)


def _missing_report(request: PipelineRequest, rows: list[Any], files: dict[str, list[Path]], card: Any,
                    algorithm: Any, absent: list[str], missing_required: list[str], summary: dict[str, Any]) -> PipelineResult:
    """Write an SR that says which sequences were missing (no SEG)."""
    from dicom_node.io.errors import SeriesReadError
    from dicom_node.io.reader import read_series
    from dicom_node.io.sr import write_measurement_report

    evidence = []
    for uid in files:
        try:
            evidence.append(read_series(files[uid])[0])
        except SeriesReadError as exc:
            log.warning("series %s not usable as SR evidence: %s", uid_tag(uid), exc)
            continue
        break
    if not evidence:
        raise ValueError(f"study {uid_tag(request.study_uid)}: no series could be read, so not even an SR can be written.")
    missing = missing_required or absent
    found = ", ".join(sorted({str(r.label) for r in rows})) or "none"
    notes = [f"Model {card.name} {card.version} was not run: it needs "
             + (f"{', '.join(missing_required)}" if missing_required else f"at least one of {', '.join(card.channels)}")
             + f"; the study holds {found}."]
    notes.extend(summary.get("unreadable", []))
    sr = write_measurement_report(
        seg=None, reference=None, source_volumes=evidence, segment_volumes_ml={}, identifications=rows,
        algorithm=algorithm, missing_sequences=missing, notes=notes,
    )
    sr_path = Path(request.out_dir) / "sr.dcm"
    sr.save_as(sr_path)
    summary.update(not_run=notes[0], missing=missing)
    log.info("tumour pipeline on study %s: not run, missing %s", uid_tag(request.study_uid), ", ".join(missing))
    return PipelineResult(outputs=[sr_path], summary=summary)
