"""The versioned training set of harvested corrections.

Layout::

    <root>/cases/<case>/<content key[:16]>/{T1,T1C,T2,FLAIR,labels}.nii.gz   immutable case files
    <root>/cases/<case>/<content key[:16]>/correction-seg.dcm                the corrected SEG, de-identified
    <root>/versions/v0001/manifest.json        a training manifest (training.manifest format)
    <root>/current -> versions/v000N             the newest version (a symbolic link)
    <root>/.pseudonym-key                       32 random bytes, mode 0600, never copied anywhere
    <root>/harvested.json                       keyed hashes of the corrections already taken

A case is named by a keyed hash (HMAC-SHA-256 with the set's own key) of its Study Instance
UID, so a newer correction of the same study replaces the older one while no UID is
written. Each case records the SHA-256 of its files, a content key (the hash of its arrays,
for de-duplication) and its provenance. A version lists every case of the version before
plus what was added; nothing is ever rewritten.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from training.harvest.convert import CaseArrays

__all__ = ["AddResult", "TrainingSet"]


@dataclass
class AddResult:
    """What :meth:`TrainingSet.commit` did."""

    version: int
    manifest: Path | None
    added: list[str]
    replaced: list[str]
    duplicates: list[str]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


class TrainingSet:
    """A versioned, de-identified training set under one folder.

    Parameters
    ----------
    root : Path
        The set's folder; created when missing.
    name : str
        The manifests' ``name``.
    """

    def __init__(self, root: Path, name: str = "harvested-corrections") -> None:
        self.root = Path(root)
        self.name = name
        self.root.mkdir(parents=True, exist_ok=True)

    # -- pseudonyms --------------------------------------------------------------------
    def _key(self) -> bytes:
        path = self.root / ".pseudonym-key"
        if not path.is_file():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        return path.read_bytes()

    def pseudonym(self, kind: str, uid: str) -> str:
        """A keyed hash of ``uid``: ``<kind>-<16 hex>`` (stable for this set, meaningless without its key)."""
        digest = hmac.new(self._key(), f"{kind}:{uid}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}-{digest[:16]}"

    # -- what was taken ------------------------------------------------------------------
    def harvested(self) -> set[str]:
        """Pseudonyms of the corrections already taken (or refused), to skip downloading them again."""
        path = self.root / "harvested.json"
        return set(json.loads(path.read_text())) if path.is_file() else set()

    def mark_harvested(self, pseudonyms: set[str]) -> None:
        """Remember corrections as taken."""
        _write_json(self.root / "harvested.json", sorted(self.harvested() | pseudonyms))

    # -- versions --------------------------------------------------------------------------
    def current_version(self) -> int:
        """The newest version number (0: none yet)."""
        versions = sorted((self.root / "versions").glob("v[0-9]*")) if (self.root / "versions").is_dir() else []
        return int(versions[-1].name[1:]) if versions else 0

    def manifest_path(self, version: int | None = None) -> Path | None:
        """The manifest of a version (default: the newest), or None when there is none."""
        v = self.current_version() if version is None else version
        path = self.root / "versions" / f"v{v:04d}" / "manifest.json"
        return path if v and path.is_file() else None

    def subjects(self, version: int | None = None) -> list[dict[str, Any]]:
        """The subjects of a version (default: the newest)."""
        path = self.manifest_path(version)
        return list(json.loads(path.read_text())["subjects"]) if path else []

    def _write_case(self, case_id: str, arrays: CaseArrays, key: str) -> tuple[dict[str, str], str | None,
                                                                              dict[str, str]]:
        import nibabel as nib

        folder = self.root / "cases" / case_id / key[:16]
        folder.mkdir(parents=True, exist_ok=True)
        paths: dict[str, str] = {}
        hashes: dict[str, str] = {}
        arrays_out = sorted(arrays.images.items())
        if arrays.labels is not None:
            arrays_out.append(("labels", arrays.labels))
        for name, data in arrays_out:
            path = folder / f"{name}.nii.gz"
            if not path.is_file():
                dtype = np.int16 if name == "labels" else np.float32
                img = nib.Nifti1Image(np.asarray(data, dtype=dtype), arrays.affine)
                img.header.set_xyzt_units("mm")
                tmp = folder / f".{name}.tmp.nii.gz"
                nib.save(img, str(tmp))
                os.replace(tmp, path)
            paths[name] = str(path.resolve())
            hashes[f"{name}.nii.gz"] = _sha256(path)
        for name, blob in sorted(arrays.files.items()):
            path = folder / name
            if not path.is_file():
                tmp = folder / f".{name}.tmp"
                tmp.write_bytes(blob)
                os.replace(tmp, path)
            hashes[name] = _sha256(path)
        labels = paths.pop("labels", None)
        return paths, labels, hashes

    def commit(self, cases: list[tuple[str, CaseArrays, dict[str, Any]]], source: str) -> AddResult:
        """Write a new version with ``cases`` added to the newest version's (nothing new: no version).

        Parameters
        ----------
        cases : list of (case id, CaseArrays, provenance)
            Converted, de-identified cases; a case id already in the set is replaced by
            the newer correction unless its content is the same.
        source : str
            Where the cases came from (the manifest's ``source``).

        Returns
        -------
        AddResult
        """
        previous = {s["id"]: s for s in self.subjects()}
        keys = {s.get("content_key") for s in previous.values()}
        added: list[str] = []
        replaced: list[str] = []
        duplicates: list[str] = []
        subjects = dict(previous)
        for case_id, arrays, provenance in cases:
            key = arrays.content_key()
            if key in keys:
                duplicates.append(case_id)
                continue
            sequences, labels, hashes = self._write_case(case_id, arrays, key)
            subjects[case_id] = {
                "id": case_id,
                "sequences": {name: {"path": path, "meta": arrays.meta.get(name, {})} for name, path in sequences.items()},
                "labels": labels,
                "label_map": {},
                "content_key": key,
                "sha256": hashes,
                "provenance": provenance,
            }
            keys.add(key)
            (replaced if case_id in previous else added).append(case_id)
        if not added and not replaced:
            return AddResult(self.current_version(), self.manifest_path(), [], [], duplicates)
        version = self.current_version() + 1
        from training.harvest.deid import PROFILE

        manifest = {
            "version": 1,
            "name": self.name,
            "source": source,
            "dataset_version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "deidentification": PROFILE,
            "subjects": [subjects[k] for k in sorted(subjects)],
        }
        path = self.root / "versions" / f"v{version:04d}" / "manifest.json"
        _write_json(path, manifest)
        link = self.root / "current"
        tmp = self.root / ".current.tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(os.path.relpath(path.parent, self.root), tmp, target_is_directory=True)
        os.replace(tmp, link)
        return AddResult(version, path, added, replaced, duplicates)
