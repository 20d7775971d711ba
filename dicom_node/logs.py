"""Logging set-up and patient-safe identifiers for log lines.

Log lines never carry patient names or IDs; UIDs are shortened to a stable hash with
:func:`uid_tag`.
"""

from __future__ import annotations

import hashlib
import logging
import sys

__all__ = ["configure_logging", "uid_tag"]


def uid_tag(uid: str | None) -> str:
    """Return a short, stable, non-reversible tag for a DICOM UID.

    Parameters
    ----------
    uid : str or None
        A Study, Series or SOP Instance UID.

    Returns
    -------
    str
        ``"uid:"`` followed by the first 10 hex digits of its SHA-256, or ``"uid:-"``.
    """
    if not uid:
        return "uid:-"
    return "uid:" + hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:10]


def configure_logging(level: str = "INFO") -> None:
    """Configure structured, single-line logging to stderr.

    Parameters
    ----------
    level : str
        A logging level name such as ``"INFO"`` or ``"DEBUG"``.

    Raises
    ------
    ValueError
        If ``level`` is not a logging level name.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"--log-level {level!r} is not a logging level; use DEBUG, INFO, WARNING or ERROR.")
    logging.basicConfig(
        level=numeric,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # pynetdicom is chatty at INFO and may print patient-level fields at DEBUG.
    logging.getLogger("pynetdicom").setLevel(max(numeric, logging.WARNING))
