"""dcmtk's tools are found even when the virtual environment (with pynetdicom's namesakes) is first on PATH."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dicom_node.dcmtk import find_tool


def test_find_tool_skips_the_python_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    venv_bin = Path(sys.prefix, "bin")
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/local/bin:/usr/bin:/bin")
    exe = find_tool("storescu")
    assert exe is not None
    assert not Path(exe).resolve().is_relative_to(Path(sys.prefix).resolve())
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    assert "dcmtk" in (out.stdout + out.stderr).lower()


def test_find_tool_returns_none_for_a_missing_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert find_tool("no-such-dcmtk-tool") is None
