"""Dataset manifests: one JSON file listing subjects, their sequences and label maps.

Format (version 1)::

    {
      "version": 1,
      "name": "synthetic-train",
      "source": "synth:/data/synth",
      "subjects": [
        {"id": "sub-0001",
         "sequences": {"T1": {"path": "/abs/T1.nii.gz", "meta": {"tr": 500.0, ...}}, ...},
         "labels": "/abs/labels.nii.gz",          # or null
         "label_map": {"4": 3}}                   # optional value remapping (BraTS)
      ]
    }

Builders read the layouts the project meets: the synthetic engine's output
(``<dir>/<subject>/<SEQ>.nii.gz``, ``labels.nii.gz``, ``params.json``), BraTS-style folders
as they are (``*_t1.nii.gz``, ``*_t1ce.nii.gz``, ``*_t2.nii.gz``, ``*_flair.nii.gz``,
``*_seg.nii.gz``; label 4 becomes 3), plain NIfTI folders (one folder per subject, files
named by sequence), and ``mrinode convert`` output (NIfTI files with a JSON sidecar naming
the sequence).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Manifest",
    "ManifestError",
    "SequenceEntry",
    "Subject",
    "build_manifest",
    "from_brats",
    "from_converted",
    "from_nifti_folders",
    "from_synth",
    "load_manifest",
    "write_synth_subjects",
]

_SEQ_ALIASES: dict[str, str] = {
    "t1": "T1", "t1w": "T1", "t1n": "T1", "mprage": "T1",
    "t1c": "T1C", "t1ce": "T1C", "t1gd": "T1C", "t1post": "T1C",
    "t2": "T2", "t2w": "T2",
    "flair": "FLAIR", "t2f": "FLAIR", "t2flair": "FLAIR",
    "pd": "PD", "dwi": "DWI", "adc": "ADC", "swi": "SWI",
}
_LABEL_NAMES = ("labels", "label", "seg", "segmentation", "mask")


class ManifestError(ValueError):
    """A manifest or data folder that cannot be used, with a sentence saying why."""


@dataclass
class SequenceEntry:
    """One sequence image of a subject."""

    path: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Subject:
    """One subject: its sequences and optional label map."""

    id: str
    sequences: dict[str, SequenceEntry]
    labels: str | None = None
    label_map: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "id": self.id,
            "sequences": {k: {"path": v.path, "meta": v.meta} for k, v in self.sequences.items()},
            "labels": self.labels,
            "label_map": self.label_map,
        }


@dataclass
class Manifest:
    """A list of subjects with a name and a source description."""

    subjects: list[Subject]
    name: str = "manifest"
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"version": 1, "name": self.name, "source": self.source, "subjects": [s.to_dict() for s in self.subjects]}

    def sha256(self) -> str:
        """Return the SHA-256 of the canonical JSON form (recorded on bundle cards)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write the manifest as JSON."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return out

    def split(self, ids: list[str]) -> tuple[Manifest, Manifest]:
        """Return ``(subjects not in ids, subjects in ids)``."""
        chosen = set(ids)
        rest = [s for s in self.subjects if s.id not in chosen]
        picked = [s for s in self.subjects if s.id in chosen]
        return Manifest(rest, self.name, self.source), Manifest(picked, self.name, self.source)


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest JSON file.

    Raises
    ------
    ManifestError
        If the file is missing, not JSON, or a subject lacks ``id`` or ``sequences``.
    """
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"manifest {p} does not exist.")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest {p} is not valid JSON ({exc}).") from None
    subjects = []
    for i, s in enumerate(data.get("subjects", [])):
        if "id" not in s or "sequences" not in s:
            raise ManifestError(f"manifest {p}: subject #{i} lacks 'id' or 'sequences'.")
        seqs = {k: SequenceEntry(str(v["path"]), dict(v.get("meta", {}))) for k, v in s["sequences"].items()}
        subjects.append(Subject(str(s["id"]), seqs, s.get("labels"), dict(s.get("label_map", {}))))
    return Manifest(subjects, str(data.get("name", p.stem)), str(data.get("source", "")))


def _seq_name(stem: str) -> str | None:
    key = re.sub(r"[^a-z0-9]", "", stem.lower())
    return _SEQ_ALIASES.get(key)


def _nii_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def from_synth(folder: str | Path) -> Manifest:
    """Build from the synthetic engine's output (``<dir>/<subject>/<SEQ>.nii.gz``)."""
    root = Path(folder)
    subjects = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if not (sub / "params.json").is_file():
            continue
        params = json.loads((sub / "params.json").read_text())
        seq_params = params.get("sequences", {}) if isinstance(params, dict) else {}
        seqs = {}
        for f in sorted(sub.glob("*.nii*")):
            stem = _nii_stem(f)
            name = stem if stem in _SEQ_ALIASES.values() else _seq_name(stem)
            if name:
                meta = seq_params.get(stem, {}) if isinstance(seq_params, dict) else {}
                seqs[name] = SequenceEntry(str(f.resolve()), meta if isinstance(meta, dict) else {})
        labels = sub / "labels.nii.gz"
        subjects.append(Subject(sub.name, seqs, str(labels.resolve()) if labels.is_file() else None))
    if not subjects:
        raise ManifestError(f"{root} holds no synthetic subjects (folders with params.json).")
    return Manifest(subjects, root.name, f"synth:{root.resolve()}")


def from_brats(folder: str | Path) -> Manifest:
    """Build from BraTS-style folders as they are.

    BraTS 2021 (``BraTS2021_00000_t1.nii.gz``, ``_t1ce``, ``_t2``, ``_flair``, ``_seg``; its
    enhancing-tumour label 4 becomes 3) and BraTS 2023 (``BraTS-GLI-00000-000-t1n.nii.gz``,
    ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``; labels 1, 2, 3 as they are) are both read, one
    subject per folder.
    """
    root = Path(folder)
    subjects = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        seqs: dict[str, SequenceEntry] = {}
        labels = None
        for f in sorted(sub.glob("*.nii*")):
            suffix = re.split(r"[_-]", _nii_stem(f))[-1].lower()  # BraTS 2021 "_t1ce", BraTS 2023 "-t1c"
            if suffix == "seg":
                labels = str(f.resolve())
            elif _seq_name(suffix):
                seqs[str(_seq_name(suffix))] = SequenceEntry(str(f.resolve()))
        if seqs:
            subjects.append(Subject(sub.name, seqs, labels, {"4": 3}))
    if not subjects:
        raise ManifestError(f"{root} holds no BraTS-style subject folders (BraTS 2021 *_t1.nii.gz, *_seg.nii.gz or "
                            "BraTS 2023 *-t1n.nii.gz, *-seg.nii.gz).")
    return Manifest(subjects, root.name, f"brats:{root.resolve()}")


def from_nifti_folders(folder: str | Path) -> Manifest:
    """Build from one folder per subject with files named by sequence (``t1.nii.gz``, ``FLAIR.nii``, ``seg.nii.gz``)."""
    root = Path(folder)
    subjects = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        seqs: dict[str, SequenceEntry] = {}
        labels = None
        for f in sorted(sub.glob("*.nii*")):
            stem = _nii_stem(f)
            if stem.lower() in _LABEL_NAMES:
                labels = str(f.resolve())
            elif _seq_name(stem):
                seqs[str(_seq_name(stem))] = SequenceEntry(str(f.resolve()))
        if seqs:
            subjects.append(Subject(sub.name, seqs, labels))
    if not subjects:
        raise ManifestError(f"{root} holds no subject folders with sequence-named NIfTI files.")
    return Manifest(subjects, root.name, f"nifti:{root.resolve()}")


def from_converted(folder: str | Path) -> Manifest:
    """Build from ``mrinode convert`` output: NIfTI files whose JSON sidecar names the sequence.

    Each folder holding such files is one subject (the study); the sidecar's ``sequence``
    (or ``SequenceLabel``) key gives the sequence, the rest is kept as acquisition metadata.
    A label map put beside them (``labels.nii.gz``, ``seg.nii.gz``, ``segmentation``, ``mask``,
    ``label``; on the grid of any of the series) is the subject's labels.
    """
    root = Path(folder)
    by_dir: dict[Path, dict[str, SequenceEntry]] = {}
    for f in sorted(root.rglob("*.nii*")):
        side = f.parent / (_nii_stem(f) + ".json")
        if not side.is_file():
            continue
        meta = json.loads(side.read_text())
        seq = str(meta.get("sequence") or meta.get("SequenceLabel") or "")
        if seq in _SEQ_ALIASES.values():
            by_dir.setdefault(f.parent, {}).setdefault(seq, SequenceEntry(str(f.resolve()), meta))
    subjects = [Subject(d.name, seqs, _label_file(d)) for d, seqs in sorted(by_dir.items())]
    if not subjects:
        raise ManifestError(f"{root} holds no converted NIfTI files with sequence sidecars.")
    return Manifest(subjects, root.name, f"converted:{root.resolve()}")


def _label_file(folder: Path) -> str | None:
    """A label map put beside converted series (``labels.nii.gz``, ``seg.nii.gz``, …), or None."""
    for f in sorted(folder.glob("*.nii*")):
        if _nii_stem(f).lower() in _LABEL_NAMES:
            return str(f.resolve())
    return None


def build_manifest(folder: str | Path, layout: str = "auto") -> Manifest:
    """Build a manifest from a data folder.

    Parameters
    ----------
    folder : str or Path
        The data folder.
    layout : str
        ``"synth"``, ``"brats"``, ``"nifti"``, ``"converted"`` or ``"auto"`` (tried in that order).

    Raises
    ------
    ManifestError
        If the layout is unknown or the folder matches none.
    """
    builders = {"synth": from_synth, "brats": from_brats, "nifti": from_nifti_folders, "converted": from_converted}
    if layout != "auto":
        if layout not in builders:
            raise ManifestError(f"manifest layout {layout!r} is not one of {', '.join(builders)} or auto.")
        return builders[layout](folder)
    errors = []
    for fn in builders.values():
        try:
            return fn(folder)
        except ManifestError as exc:
            errors.append(str(exc))
    raise ManifestError(f"{folder} matches no known data layout: " + " ".join(errors))


def write_synth_subjects(spec: dict[str, Any], out: str | Path) -> Path:
    """Generate synthetic subjects with ``training.synth`` and write them under ``out`` once.

    Parameters
    ----------
    spec : dict
        ``subjects`` (count, default 8), ``seed`` (first seed, default 0) and any other
        ``generate_subject`` keyword (``voxel_mm``, ``tumour``, ``field_strength``...).
        Subject ``i`` uses seed ``seed + i``; subjects already written by this generator version
        are kept, those of another version are written again (their images would differ).
    out : str or Path
        The parent folder.

    Returns
    -------
    Path
        ``out``.
    """
    import importlib

    synth = importlib.import_module("training.synth")
    version = importlib.import_module("training.synth.subject").GENERATOR_VERSION
    kwargs = dict(spec)
    n, seed = int(kwargs.pop("subjects", 8)), int(kwargs.pop("seed", 0))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        marker = folder / f".seed-{seed + i}"
        if marker.is_file() and _generator_version(folder / marker.read_text().strip()) == version:
            continue
        subj = synth.generate_subject(seed + i, **kwargs)
        synth.write_subject(subj, folder)
        marker.write_text(subj.subject_id + "\n")
    return folder


def _generator_version(subject: Path) -> str | None:
    """The generator version in a synthetic subject folder's ``params.json`` (None when unreadable)."""
    try:
        return str(json.loads((subject / "params.json").read_text())["generator_version"])
    except (OSError, ValueError, KeyError):
        return None
