"""Scan log text for what must never be in it: forged lines, control characters, raw UIDs.

Independent of :mod:`dicom_node.logs` on purpose (its own patterns), so a test that uses
it checks the formatter rather than repeating it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["RECORD_START", "log_problems", "raw_uids"]

#: How every record of the node's log starts (``LOG_FORMAT`` with logging's asctime).
RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.\-]+: ")
#: How every line of exception or stack text under a record starts.
CONTINUATION = "  | "
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]")
_UID = re.compile(r"(?<![\d.])\d+(?:\.\d+){2,}")


def raw_uids(text: str) -> list[str]:
    """UID-shaped tokens that are not standard UIDs, IPv4 addresses or short version numbers."""
    found = []
    for tok in _UID.findall(text):
        parts = tok.split(".")
        if tok.startswith("1.2.840.10008.") and len(tok) <= 64:
            continue
        if len(parts) == 4 and all(len(p) <= 3 and int(p) <= 255 for p in parts):
            continue
        if len(parts) == 3 and len(tok) <= 8:
            continue
        found.append(tok)
    return found


def log_problems(text: str, planted: Iterable[str] = (), *, structured: bool = True) -> list[str]:
    """Everything wrong with a log's text, one sentence each (empty when clean).

    Parameters
    ----------
    text : str
        The log (records separated by ``\\n``).
    planted : iterable of str
        Strings that must not appear (UIDs, patient names and IDs …), case-insensitively.
    structured : bool
        Also require every line to be a record or a continuation line (a forged record
        is a line that starts like a record but was not written as one: it shows up as a
        record whose text holds a second record start, or as a line of neither kind).

    Returns
    -------
    list of str
        The problems found.
    """
    problems = []
    lowered = text.lower()
    for s in planted:
        if s and s.lower() in lowered:
            problems.append(f"planted value {s!r} found")
    for n, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        if _CONTROL.search(line) or "\r" in line or "\t" in line:
            problems.append(f"line {n} has a control character: {line[:160]!r}")
        for tok in raw_uids(line):
            problems.append(f"line {n} has a raw UID {tok[:80]!r}")
        if structured:
            starts = RECORD_START.match(line)
            if not starts and not line.startswith(CONTINUATION):
                problems.append(f"line {n} is neither a record nor a continuation: {line[:160]!r}")
            if starts and line.startswith(CONTINUATION):
                problems.append(f"line {n} is both")
    return problems
