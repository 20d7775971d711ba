"""Group DICOM files into series by SeriesInstanceUID."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from dicom_node.logs import uid_tag

__all__ = ["group_series", "iter_files"]

log = logging.getLogger(__name__)


def iter_files(paths_or_dir: str | Path | Iterable[str | Path]) -> list[Path]:
    """List the files under a folder (recursively) or in a list of paths.

    Parameters
    ----------
    paths_or_dir : str, Path or iterable of those
        A folder, a single file, or files and folders.

    Returns
    -------
    list of Path
        Regular files, sorted, hidden files skipped.
    """
    items: Iterable[str | Path]
    items = [paths_or_dir] if isinstance(paths_or_dir, str | Path) else paths_or_dir
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(f for f in sorted(p.rglob("*")) if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            out.append(p)
        else:
            log.warning("%s does not exist; skipped.", p)
    return out


def group_series(paths_or_dir: str | Path | Iterable[str | Path]) -> dict[str, list[Path]]:
    """Group DICOM files by SeriesInstanceUID.

    Files that are not DICOM, or DICOM files without a SeriesInstanceUID (DICOMDIR), are
    skipped with a warning.

    Parameters
    ----------
    paths_or_dir : str, Path or iterable of those
        A folder (searched recursively), a file, or files and folders.

    Returns
    -------
    dict of str to list of Path
        SeriesInstanceUID to its files, in the order found (sorted paths).
    """
    series: dict[str, list[Path]] = {}
    for path in iter_files(paths_or_dir):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            log.warning("%s is not a readable DICOM file (%s); skipped.", path.name, type(exc).__name__)
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            log.warning("%s has no SeriesInstanceUID (not an image instance); skipped.", path.name)
            continue
        series.setdefault(uid, []).append(path)
    log.debug("grouped %d series: %s", len(series), ", ".join(uid_tag(u) for u in series))
    return series
