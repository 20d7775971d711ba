"""Put a corpus case's files into a plain folder (``.gz`` DICOM files unpacked)."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from pydicom.dataset import Dataset

from training.realdata.corpus import CorpusCase, CorpusError, resolve

__all__ = ["DESCRIPTIVE_KEYWORDS", "stage", "strip_descriptive"]

#: What "stripped headers" removes: everything a person or a protocol wrote in words.
DESCRIPTIVE_KEYWORDS: tuple[str, ...] = (
    "SeriesDescription", "ProtocolName", "SequenceName", "PulseSequenceName", "StudyDescription",
)


def stage(case: CorpusCase, dest: str | Path) -> list[Path]:
    """Link (or unpack) a case's files into ``dest`` and return them.

    Parameters
    ----------
    case : CorpusCase
        The case.
    dest : str or Path
        An empty or new folder.

    Returns
    -------
    list of Path
        One file per source file; ``name.dcm.gz`` becomes ``name.dcm``.

    Raises
    ------
    CorpusError
        If the case's files are missing.
    """
    files = resolve(case)
    if not files:
        raise CorpusError(f"corpus case {case.id!r}: files of {case.source} are missing.")
    out_dir = Path(dest)
    out_dir.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for i, src in enumerate(files):
        name = f"{i:04d}_{src.name}"
        if src.suffix == ".gz" and case.kind == "series":
            target = out_dir / name.removesuffix(".gz")
            with gzip.open(src, "rb") as fin, open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:
            target = out_dir / name
            try:
                os.symlink(src, target)
            except OSError:
                shutil.copy(src, target)
        out.append(target)
    return out


def strip_descriptive(ds: Dataset) -> Dataset:
    """Return a copy without descriptions, sequence/protocol names and private tags."""
    out = Dataset()
    out.update(ds)
    for key in DESCRIPTIVE_KEYWORDS:
        if key in out:
            delattr(out, key)
    out.remove_private_tags()
    return out
