"""What the scale-out end-to-end tests share: the node, workers, sending studies, waiting, Orthanc's view."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.scale.broker import RabbitBroker
from tests.scale.workers import WorkerProcess, scale_section
from tests.support.mrfiles import write_mr_series
from tests.support.node import TEST_PIPELINE, NodeProcess
from tests.support.orthanc import OrthancServer

__all__ = ["ENV", "PIPELINE", "TOKEN", "all_done", "jobs_of", "node_for", "orthanc_objects", "send_studies",
           "tasks_of", "wait_jobs", "worker_for"]

ENV = dict(os.environ, TCP_NODELAY="1")
#: The test pipeline, sleeping 1 s per study so that a killed worker is killed mid-job.
PIPELINE = {**TEST_PIPELINE, "options": {"threshold_fraction": 0.5, "sleep_s": 1.0}}
TOKEN = "scale-test-token"


def node_for(stack: ExitStack, tmp_path: Path, broker: RabbitBroker, orthanc: OrthancServer) -> NodeProcess:
    node = NodeProcess(
        tmp_path / "node", token=TOKEN, pipelines=[PIPELINE],
        destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
                       "port": orthanc.dicom_port}],
        extra={"routing": {"default_destinations": ["pacs"]}, "scale": scale_section(broker.url)},
    )
    return stack.enter_context(node)


def worker_for(stack: ExitStack, tmp_path: Path, name: str, broker: RabbitBroker, node: NodeProcess) -> WorkerProcess:
    w = WorkerProcess(tmp_path / name, name, broker_url=broker.url, node_url=node.url, token=TOKEN,
                      pipelines=[PIPELINE])
    stack.callback(w.kill9)
    return w.start()


def send_studies(node: NodeProcess, root: Path, n: int, first: int = 0) -> list[str]:
    """Write ``n`` small studies under ``root``, send them with one storescu, complete each."""
    uids = []
    for i in range(first, first + n):
        uid, _ = write_mr_series(root / f"s{i:02d}", 3, size=32)
        uids.append(uid)
    r = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "+r", "127.0.0.1", str(node.dicom_port), str(root)],
                       env=ENV, capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    for uid in uids:
        assert node.api("POST", f"/studies/{uid}/complete").json()["queued"]
    return uids


def jobs_of(node: NodeProcess) -> list[dict[str, Any]]:
    r = node.api("GET", "/jobs", params={"limit": 500})
    r.raise_for_status()
    return list(r.json())


def wait_jobs(node: NodeProcess, what: str, cond: Any, timeout: float, *logs: WorkerProcess) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        jobs = jobs_of(node)
        if cond(jobs):
            return jobs
        time.sleep(0.2)
    tails = "\n".join(f"--- {w.name}\n{w.log_tail()}" for w in logs)
    states = sorted((j["id"], j["state"], j["worker"], j["attempts"], j["last_error"]) for j in jobs)
    raise AssertionError(f"not {what} within {timeout:.0f} s: {states}\n--- node\n{node.log_tail()}\n{tails}")


def all_done(n: int) -> Any:
    return lambda jobs: len(jobs) == n and all(j["state"] == "done" for j in jobs)


def orthanc_objects(orthanc: OrthancServer) -> dict[str, int]:
    """Instances per study in Orthanc (the node's SEGs; the sources are never sent there)."""
    out = {}
    for sid in orthanc.get("/studies"):
        study = orthanc.get(f"/studies/{sid}")
        out[study["MainDicomTags"]["StudyInstanceUID"]] = len(orthanc.get(f"/studies/{sid}/instances"))
    return out


def tasks_of(node: NodeProcess) -> list[sqlite3.Row]:
    with sqlite3.connect(node.data_dir / "node.db") as c:
        c.row_factory = sqlite3.Row
        return c.execute("SELECT * FROM scale_tasks").fetchall()
