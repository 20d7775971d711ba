"""Resolve the labelled real-header corpus (tests/identify/corpus/real_headers.json)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

__all__ = ["CorpusEntry", "load_entries", "read_entry"]

CORPUS = Path(__file__).parent / "corpus" / "real_headers.json"


@dataclass(frozen=True)
class CorpusEntry:
    """One labelled file."""

    source: str
    name: str
    expected: str
    why: str

    @property
    def id(self) -> str:
        return f"{self.source}:{self.name}"


def load_entries() -> list[CorpusEntry]:
    """Return every corpus entry."""
    data = json.loads(CORPUS.read_text())
    return [CorpusEntry(e["source"], e["name"], e["expected"], e["why"]) for e in data["entries"]]


def resolve(entry: CorpusEntry) -> Path | None:
    """Return the file path of an entry, or ``None`` when its package or file is absent."""
    if entry.source == "pydicom":
        from pydicom.data import get_testdata_file

        found = get_testdata_file(entry.name)  # exact name: no wildcard, no download
        return Path(found) if found else None
    if entry.source == "pydicom-tree":
        import pydicom.data

        p = Path(pydicom.data.__file__).parent / "test_files" / entry.name
        return p if p.is_file() else None
    if entry.source == "nibabel":
        import nibabel

        p = Path(nibabel.__file__).parent / entry.name
        return p if p.is_file() else None
    p = Path(entry.name)
    return p if p.is_file() else None


def read_entry(entry: CorpusEntry) -> Dataset | None:
    """Read an entry's header (no pixel data), or ``None`` when it is absent."""
    path = resolve(entry)
    if path is None:
        return None
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            return pydicom.dcmread(fh, stop_before_pixels=True)
    return pydicom.dcmread(path, stop_before_pixels=True)
