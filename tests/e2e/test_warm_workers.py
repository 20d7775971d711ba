"""The node's warm worker processes, end to end: models stay loaded, crashes and recycling are supervised.

A real ``mrinode serve`` with real studies sent by dcmtk ``storescu``; what happened is read
from the node's ``/metrics`` (``mrinode_model_loads_total``, ``mrinode_worker_restarts_total``)
and from ``/proc`` (the node's worker children).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support.mrfiles import write_mr_series
from tests.support.node import TEST_PIPELINE, NodeProcess

pytestmark = pytest.mark.e2e
ENV = dict(os.environ, TCP_NODELAY="1")
BUNDLES = Path(__file__).resolve().parents[2] / "models" / "bundles"


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def _flair_study(folder: Path, n: int = 24) -> str:
    """A small single-series study that identification calls FLAIR (so the tumour model runs)."""
    study_uid, paths = write_mr_series(folder, n, series_description="AX FLAIR")
    for p in paths:
        ds = dcmread(p)
        ds.RepetitionTime, ds.EchoTime, ds.InversionTime = 9000.0, 100.0, 2500.0
        ds.ScanningSequence, ds.SequenceVariant = ["SE", "IR"], ["SK"]
        ds.save_as(p)
    return study_uid


def _send_and_run(node: NodeProcess, folder: Path, study_uid: str, timeout: float = 240.0) -> dict[str, object]:
    r = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port), str(folder)],
                       env=ENV, capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    assert node.api("POST", f"/studies/{study_uid}/complete").json()["queued"]
    # No destination is configured: the job ends after its pipelines (exporting, then failed export).
    job = node.wait_job(study_uid, states=("exporting", "done", "failed"), timeout=timeout)
    assert job["outputs"], f"{job}\n{node.log_tail()}"
    return job


def _metric(node: NodeProcess, name: str, **labels: str) -> float:
    """One sample of the node's /metrics (0 when absent)."""
    text = node.api("GET", "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name and ",".join(sorted((m.group(2) or "").split(","))) == want:
            return float(m.group(3))
    return 0.0


def _worker_pids(node: NodeProcess) -> list[int]:
    """The node's child processes (its workers)."""
    assert node.proc is not None
    pids: list[int] = []
    for task in Path(f"/proc/{node.proc.pid}/task").iterdir():
        try:
            pids += [int(x) for x in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread that ended between the listing and the read
            continue
    return sorted(pids)


def _wait_worker(node: NodeProcess, not_pid: int | None = None, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in _worker_pids(node) if p != not_pid]
        if pids:
            return pids[0]
        time.sleep(0.1)
    raise AssertionError(f"no worker process besides {not_pid}:\n{node.log_tail()}")


def _promote_new_version(bundle: Path, version: str) -> None:
    """Replace the bundle's files by a new version (same tensors, new bytes), as a promotion does."""
    from safetensors.torch import load_file, save_file

    from models.bundle import sha256_file

    weights = bundle / "weights.safetensors"
    tensors = load_file(weights)
    tmp = bundle / "weights.safetensors.new"
    save_file(tensors, tmp, metadata={"promoted": version})
    card = json.loads((bundle / "card.json").read_text())
    card["version"], card["weights_sha256"] = version, sha256_file(tmp)
    os.replace(tmp, weights)
    (bundle / "card.json").write_text(json.dumps(card, indent=2))


@pytest.mark.slow
def test_second_study_loads_no_model_and_a_new_version_is_reloaded(tmp_path: Path, stack: ExitStack) -> None:
    bundle = tmp_path / "bundles" / "brain-tumour-demo"
    shutil.copytree(BUNDLES / "brain-tumour-demo", bundle)
    version = json.loads((bundle / "card.json").read_text())["version"]
    tumour = {"name": "brain-tumour", "function": "dicom_node.pipelines.tumour:run", "enabled": True,
              "options": {"model": str(bundle), "use_pixels": False}}
    node = stack.enter_context(NodeProcess(tmp_path / "node", pipelines=[tumour]))
    loads = "mrinode_model_loads_total"

    first = _flair_study(tmp_path / "a")
    job = _send_and_run(node, tmp_path / "a", first)
    assert any(str(o).endswith("seg.dcm") for o in job["outputs"]), job  # type: ignore[attr-defined]
    assert _metric(node, loads, model="brain-tumour-demo", version=version) == 1
    worker = _wait_worker(node)

    second = _flair_study(tmp_path / "b")
    _send_and_run(node, tmp_path / "b", second)
    assert _metric(node, loads, model="brain-tumour-demo", version=version) == 1  # warm: no second load
    assert _wait_worker(node) == worker

    # A new version promoted into the same folder is loaded for the next job, without a restart.
    _promote_new_version(bundle, "9.9.9")
    third = _flair_study(tmp_path / "c")
    _send_and_run(node, tmp_path / "c", third)
    assert _metric(node, loads, model="brain-tumour-demo", version="9.9.9") == 1
    assert _metric(node, loads, model="brain-tumour-demo", version=version) == 1
    assert _wait_worker(node) == worker


def test_worker_killed_mid_job_is_restarted_and_the_job_completes_on_retry(tmp_path: Path, stack: ExitStack) -> None:
    slow = {**TEST_PIPELINE, "options": {"sleep_s": 3}}
    node = stack.enter_context(NodeProcess(tmp_path / "node", pipelines=[slow]))
    study_uid, _ = write_mr_series(tmp_path / "in", 3)
    r = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port), str(tmp_path / "in")],
                       env=ENV, capture_output=True, check=False)
    assert r.returncode == 0
    assert node.api("POST", f"/studies/{study_uid}/complete").json()["queued"]
    node.wait_job(study_uid, states=("running",), timeout=30)
    victim = _wait_worker(node)
    os.kill(victim, signal.SIGKILL)
    job = node.wait_job(study_uid, states=("exporting", "done", "failed"), timeout=60)
    assert job["attempts"] == 2 and len(job["outputs"]) == 1  # type: ignore[arg-type]
    assert _metric(node, "mrinode_worker_restarts_total", reason="crash") == 1
    assert _wait_worker(node, not_pid=victim) != victim  # a warm replacement is running


def test_worker_is_recycled_after_max_jobs(tmp_path: Path, stack: ExitStack) -> None:
    node = stack.enter_context(NodeProcess(tmp_path / "node", pipelines=[TEST_PIPELINE],
                                           extra={"workers": {"max_jobs_per_worker": 2}}))
    pids = []
    for k in range(3):
        study_uid, _ = write_mr_series(tmp_path / f"s{k}", 2)
        _send_and_run(node, tmp_path / f"s{k}", study_uid, timeout=60)
        pids.append(_wait_worker(node))
    # Jobs 1 and 2 in the first process; it is replaced after the second, between jobs.
    assert pids[0] == pids[1] != pids[2]
    assert _metric(node, "mrinode_worker_restarts_total", reason="recycle_jobs") == 1
    assert _metric(node, "mrinode_worker_restarts_total", reason="crash") == 0


def test_worker_is_recycled_above_max_rss(tmp_path: Path, stack: ExitStack) -> None:
    node = stack.enter_context(NodeProcess(tmp_path / "node", pipelines=[TEST_PIPELINE],
                                           extra={"workers": {"max_rss_mb": 1}}))
    study_uid, _ = write_mr_series(tmp_path / "in", 2)
    before = _wait_worker(node)
    job = _send_and_run(node, tmp_path / "in", study_uid, timeout=60)
    assert job["attempts"] == 1  # recycled after the job, never during it
    assert _wait_worker(node, not_pid=before) != before
    assert _metric(node, "mrinode_worker_restarts_total", reason="recycle_rss") == 1


def test_hung_worker_is_killed_and_restarted(tmp_path: Path, stack: ExitStack) -> None:
    hang = {**TEST_PIPELINE, "options": {"sleep_s": 120}}
    node = stack.enter_context(NodeProcess(tmp_path / "node", pipelines=[hang],
                                           extra={"workers": {"timeout_s": 2.0, "max_attempts": 1}}))
    study_uid, _ = write_mr_series(tmp_path / "in", 2)
    r = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port), str(tmp_path / "in")],
                       env=ENV, capture_output=True, check=False)
    assert r.returncode == 0
    hung = _wait_worker(node)
    assert node.api("POST", f"/studies/{study_uid}/complete").json()["queued"]
    job = node.wait_job(study_uid, states=("failed",), timeout=60)
    assert "workers.timeout_s=2 s" in str(job["last_error"])
    assert _metric(node, "mrinode_worker_restarts_total", reason="timeout") == 1
    assert _wait_worker(node, not_pid=hung) != hung
    assert not Path(f"/proc/{hung}").exists() or Path(f"/proc/{hung}/stat").read_text().split()[2] in "ZX"
