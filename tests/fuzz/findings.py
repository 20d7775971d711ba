"""Keep the inputs that broke a contract, so that a regular test replays them forever.

A finding is a folder ``tests/fuzz/findings/<name>/`` holding ``finding.json`` (the target,
the transfer syntax where there is one, what went wrong and what the contract expects) and
the input files (``input.bin`` for the wire scanner and the DIMSE reader, ``IM0000.dcm`` …
for the series reader). ``test_findings.py`` replays every folder.

With ``MRINODE_FUZZ_SAVE=<folder>`` in the environment, the fuzz tests write every failing
input there (Hypothesis ends a failing run by replaying its smallest example, so the last
one written is the shrunk reproducer); copy it under ``findings/`` with a name and a note.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["FINDINGS", "load_findings", "save_failure"]

FINDINGS = Path(__file__).resolve().parent / "findings"


def save_failure(target: str, files: dict[str, bytes], exc: BaseException, **extra: Any) -> None:
    """Write a failing input where ``MRINODE_FUZZ_SAVE`` says (nothing when it is unset).

    Parameters
    ----------
    target : str
        ``"wire"``, ``"dimse"`` or ``"reader"``.
    files : dict of str to bytes
        The input files by name.
    exc : BaseException
        What was raised.
    **extra
        More fields for ``finding.json`` (``transfer_syntax`` …).
    """
    where = os.environ.get("MRINODE_FUZZ_SAVE")
    if not where:
        return
    folder = Path(where) / f"{target}-{type(exc).__name__}"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    note = {"target": target, "raised": f"{type(exc).__name__}: {str(exc)[:300]}", **extra}
    (folder / "finding.json").write_text(json.dumps(note, indent=2) + "\n")


def load_findings() -> list[tuple[str, dict[str, Any], dict[str, bytes]]]:
    """Every kept finding: ``(name, finding.json, {file name: bytes})``, in name order."""
    out: list[tuple[str, dict[str, Any], dict[str, bytes]]] = []
    if not FINDINGS.is_dir():
        return out
    for folder in sorted(p for p in FINDINGS.iterdir() if (p / "finding.json").is_file()):
        note = json.loads((folder / "finding.json").read_text())
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "finding.json"}
        out.append((folder.name, note, files))
    return out
