"""``kill -9`` of ``mrinode serve`` during a 300-instance transfer loses no acknowledged instance."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support.mrfiles import write_mr_series
from tests.support.node import TEST_PIPELINE, NodeProcess
from tests.support.orthanc import free_port

pytestmark = pytest.mark.e2e
ENV = dict(os.environ, TCP_NODELAY="1")


class _StoreScp:
    """dcmtk ``storescp`` as the results destination."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self.proc = subprocess.Popen(["storescp", "-aet", "RESULTS", "-od", str(folder), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        time.sleep(0.3)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def _acknowledged(log_lines: list[str]) -> list[str]:
    """Files storescu -v saw answered with success, in order."""
    acked, current = [], None
    for line in log_lines:
        m = re.match(r"I: Sending file: (.+)$", line.strip())
        if m:
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current is not None:
            acked.append(current)
            current = None
    return acked


def test_kill9_during_transfer_loses_no_acknowledged_instance(tmp_path: Path, stack: ExitStack) -> None:
    results = _StoreScp(tmp_path / "results")
    stack.callback(results.stop)
    node = stack.enter_context(NodeProcess(
        tmp_path / "node",
        destinations=[{"name": "results", "kind": "dicom", "ae_title": "RESULTS", "host": "127.0.0.1",
                       "port": results.port}],
        pipelines=[TEST_PIPELINE],
        extra={"routing": {"default_destinations": ["results"]}},
    ))
    study_uid, paths = write_mr_series(tmp_path / "in", 300)
    proc = subprocess.Popen(
        ["storescu", "-v", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port), str(tmp_path / "in")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
    )
    # Kill the node once 100 instances are indexed (read from its database, as a monitor would).
    db = node.data_dir / "node.db"
    killed = False
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
                n = c.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        except sqlite3.Error:
            n = 0
        if n >= 100:
            node.kill9()
            killed = True
            break
        time.sleep(0.005)
    out, _ = proc.communicate(timeout=120)
    lines = out.splitlines()
    assert killed, "the transfer finished before the node could be killed"
    assert proc.returncode != 0  # storescu saw the association die
    acked = _acknowledged(lines)
    assert 50 <= len(acked) < 300

    node.start()
    # Every instance storescu saw acknowledged is indexed and its spool file is complete.
    sop_of = {str(p): str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}
    stored = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
              for p in (node.data_dir / "spool").rglob("*.dcm")}
    for f in acked:
        assert sop_of[f] in stored, f"acknowledged {f} is missing after the crash"
        ds = dcmread(stored[sop_of[f]])
        assert ds.pixel_array.shape == (64, 64)
    study = node.api("GET", f"/studies/{study_uid}").json()
    assert study["n_instances"] >= len(acked)

    # The sender re-sends the study; the node completes it and the job runs to done.
    r = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port), str(tmp_path / "in")],
                       capture_output=True, text=True, env=ENV, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert node.api("GET", f"/studies/{study_uid}").json()["n_instances"] == 300
    assert len(list((node.data_dir / "spool").rglob("*.dcm"))) == 300
    assert node.api("POST", f"/studies/{study_uid}/complete").status_code == 200
    job = node.wait_job(study_uid, timeout=180)
    assert job["state"] == "done"
    received = list(results.folder.iterdir())
    assert len(received) == 1 and dcmread(received[0]).Modality == "SEG"


def test_restart_resumes_an_interrupted_job(tmp_path: Path, stack: ExitStack) -> None:
    slow = {**TEST_PIPELINE, "options": {"sleep_s": 30}}
    node = stack.enter_context(NodeProcess(tmp_path / "node", pipelines=[slow]))
    study_uid, _ = write_mr_series(tmp_path / "in", 4)
    assert subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port),
                           str(tmp_path / "in")], env=ENV, capture_output=True, check=False).returncode == 0
    assert node.api("POST", f"/studies/{study_uid}/complete").json()["queued"]
    node.wait_job(study_uid, states=("running",), timeout=30)
    node.kill9()
    node.config["pipelines"] = [TEST_PIPELINE]
    from tests.support.node import to_toml

    node.config_path.write_text(to_toml(node.config))
    node.start()
    job = node.wait_job(study_uid, states=("exporting", "failed", "done"), timeout=60)
    # It ran again after the restart (the crashed run is not counted) and produced its SEG.
    assert job["attempts"] == 1 and len(job["outputs"]) == 1


def test_sigterm_finishes_stores_in_flight_and_keeps_queued_jobs(tmp_path: Path, stack: ExitStack) -> None:
    slow = {**TEST_PIPELINE, "options": {"sleep_s": 60}}
    node = stack.enter_context(NodeProcess(tmp_path / "node", pipelines=[slow]))
    first, _ = write_mr_series(tmp_path / "a", 2)
    second, _ = write_mr_series(tmp_path / "b", 2)
    for folder, uid in ((tmp_path / "a", first), (tmp_path / "b", second)):
        assert subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port), str(folder)],
                              env=ENV, capture_output=True, check=False).returncode == 0
        assert node.api("POST", f"/studies/{uid}/complete").json()["queued"]
    node.wait_job(first, states=("running",), timeout=30)
    # SIGTERM in the middle of a transfer: the node answers what it has received, then exits 0.
    write_mr_series(tmp_path / "c", 300)
    proc = subprocess.Popen(["storescu", "-v", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port),
                             str(tmp_path / "c")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    db = node.data_dir / "node.db"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            if c.execute("SELECT COUNT(*) FROM instances").fetchone()[0] >= 4 + 50:
                break
        time.sleep(0.005)
    t0 = time.monotonic()
    assert node.stop(timeout=60) == 0
    assert time.monotonic() - t0 < 45
    out, _ = proc.communicate(timeout=60)
    acked = _acknowledged(out.splitlines())
    log = node.log_path.read_text()
    assert "received SIGTERM" in log and "interrupted by shutdown" in log
    # Both jobs are waiting for the next start; every acknowledged instance is kept.
    node.config["pipelines"] = [TEST_PIPELINE]
    from tests.support.node import to_toml

    node.config_path.write_text(to_toml(node.config))
    node.start()
    jobs = {j["study_uid"]: j for j in node.api("GET", "/jobs").json()}
    assert set(jobs) >= {first, second}
    stored = {p.name for p in (node.data_dir / "spool").rglob("*.dcm")}
    for f in acked:
        sop = str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        assert f"{sop}.dcm" in stored
    for uid in (first, second):
        job = node.wait_job(uid, states=("failed",), timeout=90)  # no destination for STORESCU: results kept
        assert "no destination" in job["last_error"] and len(job["outputs"]) == 1
        assert job["attempts"] == 1  # the run cut short by SIGTERM is not counted
    # REST retry: re-send is refused again for the same reason, the job is visible by id.
    job_id = jobs[first]["id"]
    assert node.api("GET", f"/jobs/{job_id}").json()["study_uid"] == first
    assert node.api("POST", f"/jobs/{job_id}/retry").json()["state"] == "exporting"
    assert node.api("GET", "/jobs/99999").status_code == 404
