"""Find dcmtk's command-line tools without picking up pynetdicom's namesakes.

pynetdicom installs ``storescu``, ``storescp``, ``echoscu``, ``echoscp``, ``findscu``, ``getscu``
and ``movescu`` console scripts into the Python environment's ``bin``; with that environment activated they come first
on ``PATH`` and take different options (``+sd`` is not one of them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["find_tool"]


def find_tool(name: str) -> str | None:
    """Return the path of dcmtk's ``name`` on ``PATH``, skipping this Python environment's ``bin``.

    Parameters
    ----------
    name : str
        A dcmtk tool, for example ``"storescu"``.

    Returns
    -------
    str or None
        The executable's path, or None when no such tool is installed outside the environment.
    """
    skip = {Path(p, "bin").resolve() for p in (sys.prefix, sys.exec_prefix)}
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if not entry or Path(entry).resolve() in skip:
            continue
        candidate = Path(entry, name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None
