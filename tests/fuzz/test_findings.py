"""Replay every input the fuzzers found breaking a contract (``tests/fuzz/findings/``).

Each finding stays as a regular test after its fix, so the bug cannot come back unseen.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fuzz.findings import load_findings

FOUND = load_findings()


def test_findings_are_kept() -> None:
    assert FOUND, "tests/fuzz/findings/ holds the reproducers of fixed bugs"
    for name, note, files in FOUND:
        assert note["target"] in {"wire", "dimse", "reader"}, name
        assert files, name


@pytest.mark.parametrize(("name", "note", "files"), FOUND, ids=[f[0] for f in FOUND])
def test_finding_keeps_its_contract(name: str, note: dict[str, Any], files: dict[str, bytes]) -> None:
    if note["target"] == "reader":
        from tests.fuzz.test_reader_fuzz import check_read

        check_read(list(files.values()))
    elif note["target"] == "wire":
        from tests.fuzz.test_wire_fuzz import check_scan

        check_scan(files["input.bin"], note["transfer_syntax"])
    else:
        from tests.fuzz.test_fastdimse_fuzz import check_parse

        check_parse(files["input.bin"])
