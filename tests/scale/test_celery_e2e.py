"""Scale-out on Celery + RabbitMQ, end to end (issue 17's acceptance).

Real parts only: a private RabbitMQ (Debian ``rabbitmq-server``, loopback, this network
namespace), Orthanc as the PACS, ``mrinode serve`` with ``[scale] engine = "celery"`` and
``mrinode worker`` processes, each in its own folder (nothing shared but the network: they
fetch studies over WADO-RS from the node and upload results to it). Studies are sent by
dcmtk ``storescu``; the test pipeline sleeps 1 s per study so that the work, not the start
of the processes, is what a killed worker interrupts.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.scale.broker import RabbitBroker
from tests.scale.workers import WorkerProcess, scale_section
from tests.support.mrfiles import write_mr_series
from tests.support.node import TEST_PIPELINE, NodeProcess
from tests.support.orthanc import OrthancServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ENV = dict(os.environ, TCP_NODELAY="1")
PIPELINE = {**TEST_PIPELINE, "options": {"threshold_fraction": 0.5, "sleep_s": 1.0}}
TOKEN = "scale-test-token"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitBroker]:
    b = RabbitBroker(tmp_path_factory.mktemp("rabbitmq"))
    b.start()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def _node(stack: ExitStack, tmp_path: Path, broker: RabbitBroker, orthanc: OrthancServer) -> NodeProcess:
    node = NodeProcess(
        tmp_path / "node", token=TOKEN, pipelines=[PIPELINE],
        destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
                       "port": orthanc.dicom_port}],
        extra={"routing": {"default_destinations": ["pacs"]}, "scale": scale_section(broker.url)},
    )
    return stack.enter_context(node)


def _worker(stack: ExitStack, tmp_path: Path, name: str, broker: RabbitBroker, node: NodeProcess) -> WorkerProcess:
    w = WorkerProcess(tmp_path / name, name, broker_url=broker.url, node_url=node.url, token=TOKEN,
                      pipelines=[PIPELINE])
    stack.callback(w.kill9)
    return w.start()


def _send(node: NodeProcess, root: Path, n: int, first: int = 0) -> list[str]:
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


def _jobs(node: NodeProcess) -> list[dict[str, Any]]:
    r = node.api("GET", "/jobs", params={"limit": 500})
    r.raise_for_status()
    return list(r.json())


def _wait(node: NodeProcess, what: str, cond: Any, timeout: float, *logs: WorkerProcess) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        jobs = _jobs(node)
        if cond(jobs):
            return jobs
        time.sleep(0.2)
    tails = "\n".join(f"--- {w.name}\n{w.log_tail()}" for w in logs)
    states = sorted((j["id"], j["state"], j["worker"], j["attempts"], j["last_error"]) for j in jobs)
    raise AssertionError(f"not {what} within {timeout:.0f} s: {states}\n--- node\n{node.log_tail()}\n{tails}")


def _all_done(n: int) -> Any:
    return lambda jobs: len(jobs) == n and all(j["state"] == "done" for j in jobs)


def _orthanc_objects(orthanc: OrthancServer) -> dict[str, int]:
    """Instances per study in Orthanc (the node's SEGs; the sources are never sent there)."""
    out = {}
    for sid in orthanc.get("/studies"):
        study = orthanc.get(f"/studies/{sid}")
        out[study["MainDicomTags"]["StudyInstanceUID"]] = len(orthanc.get(f"/studies/{sid}/instances"))
    return out


def _tasks(node: NodeProcess) -> list[sqlite3.Row]:
    with sqlite3.connect(node.data_dir / "node.db") as c:
        c.row_factory = sqlite3.Row
        return c.execute("SELECT * FROM scale_tasks").fetchall()


def test_twenty_studies_on_two_workers_one_killed_mid_job(tmp_path: Path, broker: RabbitBroker,
                                                         stack: ExitStack) -> None:
    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc"))
    node = _node(stack, tmp_path, broker, orthanc)
    w1 = _worker(stack, tmp_path, "w1", broker, node)
    w2 = _worker(stack, tmp_path, "w2", broker, node)
    uids = _send(node, tmp_path / "in", 20)

    # w1 gets a job; kill -9 it while the job runs (the pipeline sleeps 1 s): the broker gives it to w2.
    jobs = _wait(node, "a job running on w1", lambda js: any(j["state"] == "running" and j["worker"] == "w1"
                                                              for j in js), 120, w1, w2)
    victim = next(j for j in jobs if j["state"] == "running" and j["worker"] == "w1")
    w1.kill9()
    jobs = _wait(node, "all 20 done", _all_done(20), 240, w2)

    by_id = {j["id"]: j for j in jobs}
    assert by_id[victim["id"]]["worker"] == "w2", by_id[victim["id"]]
    assert by_id[victim["id"]]["attempts"] == 2, by_id[victim["id"]]  # the lost run counted
    assert {j["worker"] for j in jobs} <= {"w1", "w2"}
    assert all(j["outputs"] for j in jobs)
    # Every study's one SEG is in Orthanc, none twice.
    objects = _orthanc_objects(orthanc)
    assert sorted(objects) == sorted(uids)
    assert set(objects.values()) == {1}, objects
    # The node's task record: the victim's task was delivered twice, to w1 then w2.
    victim_tasks = [t for t in _tasks(node) if t["job_id"] == victim["id"]]
    assert len(victim_tasks) == 1 and victim_tasks[0]["deliveries"] == 2 and victim_tasks[0]["worker"] == "w2"
    # /metrics: which worker ran how many jobs.
    metrics = node.api("GET", "/metrics").text
    ran_w2 = sum(1 for j in jobs if j["worker"] == "w2")
    assert f'mrinode_worker_jobs_total{{worker="w2"}} {float(ran_w2)}' in metrics, metrics
    # The workers fetched the studies over WADO-RS into their own folders, and cleaned up.
    assert "3 instance(s) fetched over WADO-RS" in w2.log_path.read_text()
    assert not any((tmp_path / "w2" / "scratch").iterdir())


def test_a_worker_started_after_the_studies_arrived_takes_the_queued_jobs(tmp_path: Path, broker: RabbitBroker,
                                                                         stack: ExitStack) -> None:
    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc"))
    node = _node(stack, tmp_path, broker, orthanc)
    uids = _send(node, tmp_path / "in", 4)
    # No worker yet: the jobs are sent to the broker and wait there.
    _wait(node, "all 4 sent", lambda js: len(js) == 4 and all(j["state"] == "running" for j in js), 60)
    time.sleep(2.0)
    assert all(j["state"] == "running" and j["worker"] is None for j in _jobs(node))
    late = _worker(stack, tmp_path, "late", broker, node)
    jobs = _wait(node, "all 4 done", _all_done(4), 120, late)
    assert {j["worker"] for j in jobs} == {"late"}
    assert sorted(_orthanc_objects(orthanc)) == sorted(uids)
    # `mrinode jobs` shows the worker of each job
    listing = subprocess.run([sys.executable, "-m", "dicom_node", "jobs", "list", "--config", str(node.config_path)],
                             capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    assert "WORKER" in listing[0]
    assert len([line for line in listing[1:] if " done " in line and " late " in line]) == 4, listing


def test_a_worker_reads_a_shared_spool_when_configured(tmp_path: Path, broker: RabbitBroker, stack: ExitStack) -> None:
    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc"))
    node = _node(stack, tmp_path, broker, orthanc)
    w = WorkerProcess(tmp_path / "ws", "ws", broker_url=broker.url, node_url=node.url, token=TOKEN,
                      pipelines=[PIPELINE],
                      scale={"data_access": "shared", "shared_spool_dir": str(node.data_dir / "spool")})
    stack.callback(w.kill9)
    w.start()
    uids = _send(node, tmp_path / "in", 2)
    jobs = _wait(node, "both done", _all_done(2), 120, w)
    assert {j["worker"] for j in jobs} == {"ws"}
    assert sorted(_orthanc_objects(orthanc)) == sorted(uids)
    log = w.log_path.read_text()
    assert log.count("3 instance(s) read from the shared spool") == 2 and "WADO-RS" not in log, w.log_tail()


def test_broker_stopped_for_30_s_jobs_wait_then_complete(tmp_path: Path, broker: RabbitBroker,
                                                         stack: ExitStack) -> None:
    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc"))
    node = _node(stack, tmp_path, broker, orthanc)
    workers = [_worker(stack, tmp_path, f"b{i}", broker, node) for i in (1, 2)]
    first = _send(node, tmp_path / "in1", 2)
    # One job is running on a worker when the broker goes away: its ack is lost, its message
    # comes back after the restart and must not run (and export) again.
    _wait(node, "a job running on a worker", lambda js: any(j["state"] == "running" and j["worker"] for j in js),
          120, *workers)
    broker.stop()
    stopped = time.monotonic()
    later = _send(node, tmp_path / "in2", 3, first=2)
    # For 30 s the new jobs wait on the node: queued (or, for a moment, being sent), on no worker.
    while time.monotonic() - stopped < 30.0:
        waiting = [j for j in _jobs(node) if j["study_uid"] in later]
        assert len(waiting) == 3, waiting
        assert all(j["state"] in ("queued", "running") and j["worker"] is None for j in waiting), waiting
        time.sleep(1.0)
    broker.start()
    jobs = _wait(node, "all 5 done", _all_done(5), 180, *workers)
    objects = _orthanc_objects(orthanc)
    assert sorted(objects) == sorted(first + later)
    assert set(objects.values()) == {1}, objects
    assert all(j["attempts"] >= 1 for j in jobs)


def test_a_job_that_keeps_failing_is_retried_with_backoff_then_dead_lettered(tmp_path: Path, broker: RabbitBroker,
                                                                            stack: ExitStack) -> None:
    from kombu import Connection

    crash = {**TEST_PIPELINE, "options": {"fail": "crash"}}  # the warm child exits mid-job, every time
    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc"))
    node = NodeProcess(
        tmp_path / "node", token=TOKEN, pipelines=[crash],
        destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
                       "port": orthanc.dicom_port}],
        extra={"routing": {"default_destinations": ["pacs"]},
               "scale": scale_section(broker.url)},
    )
    stack.enter_context(node)
    w = WorkerProcess(tmp_path / "wf", "wf", broker_url=broker.url, node_url=node.url, token=TOKEN, pipelines=[crash])
    stack.callback(w.kill9)
    w.start()
    _send(node, tmp_path / "in", 1)
    jobs = _wait(node, "the job failed", lambda js: len(js) == 1 and js[0]["state"] == "failed", 120, w)
    job = jobs[0]
    assert job["attempts"] == 3, job  # scale.max_attempts runs
    assert "pipeline process failed (exit code 70)" in job["last_error"], job["last_error"]
    assert "dead-letter queue mrinode.dead" in job["last_error"], job["last_error"]
    (task,) = [t for t in _tasks(node) if t["job_id"] == job["id"]]
    assert task["deliveries"] == 3 and task["state"] == "failed"
    # the backoff: 1 s then 2 s between the runs (scale.backoff_initial_s = 1)
    log = w.log_path.read_text()
    assert "run 1 failed" in log and "retried in 1 s" in log and "retried in 2 s" in log, w.log_tail()
    # the message itself is kept in the dead-letter queue
    with Connection(broker.url) as conn:
        _, count, _ = conn.default_channel.queue_declare("mrinode.dead", passive=True)
    assert count == 1
    assert _orthanc_objects(orthanc) == {}
