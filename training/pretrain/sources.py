"""Where unlabelled pretraining subjects come from: subject folders, manifests, the engine.

See :mod:`training.pretrain.data` for the accepted layouts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.sequences import SequenceLabel, parse_sequence_label

__all__ = ["PARAM_NAMES", "UnlabelledSubject", "collect_subjects", "normalise_params"]

PARAM_NAMES: tuple[str, ...] = ("tr", "te", "flip")
_PARAM_KEYS: dict[str, tuple[str, ...]] = {
    "tr": ("tr", "tr_ms", "repetition_time", "repetitiontime"),
    "te": ("te", "te_ms", "echo_time", "echotime"),
    "flip": ("flip", "flip_deg", "flip_angle", "flipangle"),
}


@dataclass
class UnlabelledSubject:
    """One subject: a path or an in-memory array per sequence, and acquisition parameters.

    Attributes
    ----------
    subject_id : str
        Identifier (never a patient name).
    images : dict
        Sequence label value -> NIfTI path or an in-memory ``(array, affine)`` pair.
    params : dict
        Sequence label value -> ``{"tr": ms, "te": ms, "flip": degrees}`` (any may be missing).
    """

    subject_id: str
    images: dict[str, Any]
    params: dict[str, dict[str, float]] = field(default_factory=dict)


def _find_param(entry: Mapping[str, Any], name: str) -> float | None:
    lowered = {str(k).lower(): v for k, v in entry.items()}
    for key in _PARAM_KEYS[name]:
        value = lowered.get(key)
        if isinstance(value, int | float) and math.isfinite(float(value)):
            return float(value)
    return None


def _params_from(entry: Any) -> dict[str, float]:
    if not isinstance(entry, Mapping):
        return {}
    out = {}
    for name in PARAM_NAMES:
        value = _find_param(entry, name)
        if value is not None:
            out[name] = value
    return out


def _sequence_params(params_json: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per-sequence TR/TE/flip from a synthetic ``params.json`` (layout-tolerant)."""
    pools: list[Mapping[str, Any]] = [params_json]
    for key in ("sequences", "acquisition", "protocols", "protocol"):
        sub = params_json.get(key)
        if isinstance(sub, Mapping):
            pools.append(sub)
    out: dict[str, dict[str, float]] = {}
    for pool in pools:
        for key, entry in pool.items():
            try:
                label = parse_sequence_label(str(key)).value
            except ValueError:
                continue
            found = _params_from(entry)
            if found:
                out[label] = found
    return out


def _subject_from_folder(folder: Path) -> UnlabelledSubject | None:
    images: dict[str, Any] = {}
    for path in sorted(folder.glob("*.nii*")):
        stem = path.name.split(".nii")[0]
        try:
            label = parse_sequence_label(stem)
        except ValueError:
            continue
        if label not in (SequenceLabel.LOCALIZER, SequenceLabel.OTHER, SequenceLabel.UNKNOWN):
            images[label.value] = path
    if not images:
        return None
    params: dict[str, dict[str, float]] = {}
    pj = folder / "params.json"
    if pj.is_file():
        params = _sequence_params(json.loads(pj.read_text()))
    return UnlabelledSubject(folder.name, images, params)


def _subjects_from_manifest(path: Path) -> list[UnlabelledSubject]:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"pretraining manifest {path} is not valid JSON ({exc}).") from exc
    entries = doc.get("subjects") if isinstance(doc, Mapping) else doc
    if not isinstance(entries, list):
        raise ValueError(f"pretraining manifest {path} has no list of 'subjects'.")
    out = []
    for i, entry in enumerate(entries):
        sid = str(entry.get("subject_id") or entry.get("id") or f"subject-{i:04d}")
        seqs = entry.get("sequences") or entry.get("images") or {}
        if isinstance(seqs, list):  # [{"sequence": "T1", "path": ...}, ...]
            seqs = {str(s.get("sequence") or s.get("label")): s for s in seqs}
        images: dict[str, Any] = {}
        params: dict[str, dict[str, float]] = {}
        for key, value in seqs.items():
            label = parse_sequence_label(str(key)).value
            p = value if isinstance(value, str) else value.get("path")
            if not p:
                raise ValueError(f"pretraining manifest {path}: subject {sid} sequence {label} has no path.")
            full = Path(p) if Path(p).is_absolute() else path.parent / p
            images[label] = full
            found = _params_from(value if isinstance(value, Mapping) else {})
            if isinstance(value, Mapping):
                for sub in ("acquisition", "meta"):
                    found.update(_params_from(value.get(sub) or {}))
            if found:
                params[label] = found
        if images:
            out.append(UnlabelledSubject(sid, images, params))
    return out


def _subjects_from_synth(spec: Mapping[str, Any], voxel_mm: float) -> list[UnlabelledSubject]:
    import importlib

    generate_subject = importlib.import_module("training.synth").generate_subject  # heavy: on demand

    n = int(spec.get("subjects", 8))
    seed = int(spec.get("seed", 0))
    kwargs = {k: v for k, v in spec.items() if k not in ("subjects", "seed")}
    if "sequences" in kwargs:
        kwargs["sequences"] = [parse_sequence_label(s) for s in kwargs["sequences"]]
    kwargs.setdefault("voxel_mm", voxel_mm)
    out = []
    for i in range(n):
        subj = generate_subject(seed + i, **kwargs)
        affine = np.asarray(subj.affine, dtype=np.float64)
        images = {str(k): (np.asarray(v, dtype=np.float32), affine) for k, v in subj.images.items()}
        out.append(UnlabelledSubject(subj.subject_id, images, _sequence_params(subj.params)))
    return out


def collect_subjects(sources: Iterable[Any], voxel_mm: float = 2.0) -> list[UnlabelledSubject]:
    """Gather subjects from folders, manifests and in-memory synthetic specs.

    Parameters
    ----------
    sources : iterable
        Each a path (folder of subjects, a subject folder, or a ``.json`` manifest) or a
        mapping ``{"synth": {...generate_subject keywords, "subjects": N, "seed": S}}``.
    voxel_mm : float
        Voxel size for in-memory synthetic subjects.

    Returns
    -------
    list of UnlabelledSubject
        In a stable order.

    Raises
    ------
    ValueError
        If a source does not exist or holds no usable subject.
    """
    subjects: list[UnlabelledSubject] = []
    for src in sources:
        if isinstance(src, Mapping):
            if "synth" not in src:
                raise ValueError(f"pretraining data source {dict(src)!r} is neither a path nor a synth spec.")
            found = _subjects_from_synth(src["synth"], voxel_mm)
        else:
            path = Path(src)
            if not path.exists():
                raise ValueError(f"pretraining data source {path} does not exist.")
            if path.is_file():
                found = _subjects_from_manifest(path)
            else:
                single = _subject_from_folder(path)
                if single is not None:
                    found = [single]
                else:
                    found = [s for d in sorted(path.iterdir()) if d.is_dir() if (s := _subject_from_folder(d))]
        if not found:
            raise ValueError(f"pretraining data source {src} holds no NIfTI volume named by a sequence.")
        subjects.extend(found)
    return subjects


def normalise_params(values: Mapping[str, float]) -> tuple[list[float], list[float]]:
    """Map TR/TE (ms, log scale) and flip (degrees) to roughly unit range, with a mask.

    Parameters
    ----------
    values : mapping
        Any of ``tr``, ``te``, ``flip``.

    Returns
    -------
    tuple of list of float
        The normalised values (0 where missing) and a 0/1 mask, in :data:`PARAM_NAMES` order.
    """
    centre = {"tr": (math.log(2000.0), 1.5), "te": (math.log(40.0), 1.5), "flip": (60.0, 60.0)}
    vals, mask = [], []
    for name in PARAM_NAMES:
        v = values.get(name)
        if v is None or (name in ("tr", "te") and v <= 0):
            vals.append(0.0)
            mask.append(0.0)
            continue
        c, s = centre[name]
        x = math.log(v) if name in ("tr", "te") else v
        vals.append((x - c) / s)
        mask.append(1.0)
    return vals, mask
