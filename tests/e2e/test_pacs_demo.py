"""``python -m dicom_node.demo run`` then ``stop``, as ``make demo`` / ``make demo-stop`` do.

The demo runs its services in its own network namespace (a unique name here) and
forwards 127.0.0.1:8042/4242 of the test's private namespace into it. The synthetic
study is the one the other e2e tests use (``--study``), to save generating it twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugin.pacs_helpers import synthetic_study
from tests.support.orthanc import OrthancClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


def _demo(*args: str, timeout: float = 800) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TCP_NODELAY="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "dicom_node.demo", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")


def test_demo_run_then_stop(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    study = synthetic_study(tmp_path_factory.getbasetemp() / "pacs-synth")
    var = tmp_path / "demo"
    netns = f"mrinode-demo-test-{os.getpid()}"
    common = ["--var", str(var), "--netns", netns]
    try:
        run = _demo("run", *common, "--study", str(study), "--timeout", "600")
        out = run.stdout
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        for expected in ("=== mrinode demo: results ===", "volumes read back from the SEG", "Seconds per stage",
                         "total: last instance stored -> SEG + SR stored", "Orthanc Explorer: http://127.0.0.1:8042/",
                         f"sudo ip netns exec {netns} curl -u demo:demo", "make demo-stop"):
            assert expected in out, out
        assert "FLAIR" in out and "segment 1" in out
        png = var / "overlay.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        pids = {name: int((var / f"{name}.pid").read_text()) for name in ("orthanc", "node", "forward")}
        assert all(_alive(p) for p in pids.values())
        assert Path(f"/run/netns/{netns}").exists()
        # The services keep running: Orthanc answers through the loopback forwarder.
        with OrthancClient("http://127.0.0.1:8042", user="demo", pwd="demo") as api:
            assert len(api.studies.get_all_ids()) == 1
    finally:
        stop = _demo("stop", *common, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert "orthanc: stopped" in stop.stdout and "node: stopped" in stop.stdout
    assert not any(_alive(p) for p in pids.values())
    assert not list(var.glob("*.pid"))
    assert not Path(f"/run/netns/{netns}").exists()
    again = _demo("stop", *common, timeout=60)
    assert again.returncode == 0 and "nothing was running" in again.stdout
