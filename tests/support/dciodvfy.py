"""Run dicom3tools' ``dciodvfy`` on a file and parse its errors and warnings."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DciodvfyReport", "dciodvfy"]


@dataclass
class DciodvfyReport:
    """What ``dciodvfy`` said about one file."""

    path: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str = ""


def dciodvfy(path: str | Path) -> DciodvfyReport:
    """Validate a DICOM file with the real ``dciodvfy``.

    Parameters
    ----------
    path : str or Path
        The DICOM Part 10 file.

    Returns
    -------
    DciodvfyReport
        The error and warning lines (``Error -`` / ``Warning -``).

    Raises
    ------
    RuntimeError
        If ``dciodvfy`` is not installed.
    """
    exe = shutil.which("dciodvfy")
    if exe is None:
        raise RuntimeError("dciodvfy is not installed (Debian package dicom3tools); run `make setup`.")
    proc = subprocess.run([exe, "-new", str(path)], capture_output=True, text=True, check=False)
    out = proc.stdout + proc.stderr
    report = DciodvfyReport(path=Path(path), output=out)
    for line in out.splitlines():
        if line.startswith("Error"):
            report.errors.append(line)
        elif line.startswith("Warning"):
            report.warnings.append(line)
    return report
