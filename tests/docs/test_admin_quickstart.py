"""The administrator's quick start works as written: every command block, in order, on a fresh ``var/``.

The blocks under ``## Quick start`` in ``docs/admin-guide.md`` run in one bash session (``set -e``)
in an empty folder that holds only a link to the repository's ``deploy/``; the node's environment
comes first on the ``PATH``. What the guide says happens is checked afterwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "admin-guide.md"

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk missing")]


def quickstart_blocks(text: str) -> list[str]:
    """The ```bash blocks of the guide's "Quick start" section, in order."""
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section is not None, "docs/admin-guide.md has no '## Quick start' section"
    return re.findall(r"```bash\n(.*?)```", section.group(1), flags=re.S)


def test_quickstart_blocks_are_found() -> None:
    blocks = quickstart_blocks(GUIDE.read_text())
    assert len(blocks) >= 5
    assert any("mrinode serve" in b for b in blocks) and any("kill" in b for b in blocks)


def test_admin_quickstart_runs_on_a_fresh_var(tmp_path: Path) -> None:
    blocks = quickstart_blocks(GUIDE.read_text())
    (tmp_path / "deploy").symlink_to(ROOT / "deploy")
    script = "set -euo pipefail\n" + "\n".join(f"echo '--- block {i}'\n{b}" for i, b in enumerate(blocks, 1))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", TCP_NODELAY="1")
    proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        pid_file = tmp_path / "node.pid"
        if pid_file.exists():  # the node, should a block have failed before the last one
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
    log = (tmp_path / "node.log").read_text() if (tmp_path / "node.log").exists() else "(no node.log)"
    assert proc.returncode == 0, f"{out}\n--- node.log ---\n{log[-4000:]}"
    # What the guide says: the check passes with the demo bundle, the study gets a job whose
    # pipeline ran the demo model, and the results wait for a destination.
    assert "bundle 'brain-tumour-demo' loads" in out
    assert '"status":"ok"' in out
    assert re.search(r"^\s+1\s+exporting\s", out, flags=re.M), out
    assert '"model": "brain-tumour-demo"' in out
    assert (tmp_path / "var" / "node.db").is_file() and (tmp_path / "var" / "audit.jsonl").is_file()
    assert "stopped" in log
