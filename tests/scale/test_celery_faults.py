"""Scale-out on Celery + RabbitMQ, end to end: the broker away for 30 s, a job that keeps failing, a node restart.

Same real parts as ``test_celery_e2e.py`` (its own private RabbitMQ).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.scale.broker import RabbitBroker
from tests.scale.e2e_support import (
    TOKEN,
    all_done,
    jobs_of,
    node_for,
    orthanc_objects,
    send_studies,
    tasks_of,
    wait_jobs,
    worker_for,
)
from tests.scale.workers import WorkerProcess, scale_section
from tests.support.node import TEST_PIPELINE, NodeProcess
from tests.support.orthanc import OrthancServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_broker_stopped_for_30_s_jobs_wait_then_complete(tmp_path: Path, broker: RabbitBroker,
                                                         stack: ExitStack) -> None:
    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc"))
    node = node_for(stack, tmp_path, broker, orthanc)
    workers = [worker_for(stack, tmp_path, f"b{i}", broker, node) for i in (1, 2)]
    first = send_studies(node, tmp_path / "in1", 2)
    # One job is running on a worker when the broker goes away: its ack is lost, its message
    # comes back after the restart and must not run (and export) again.
    wait_jobs(node, "a job running on a worker", lambda js: any(j["state"] == "running" and j["worker"] for j in js),
          120, *workers)
    broker.stop()
    stopped = time.monotonic()
    later = send_studies(node, tmp_path / "in2", 3, first=2)
    # For 30 s the new jobs wait on the node: queued (or, for a moment, being sent), on no worker.
    while time.monotonic() - stopped < 30.0:
        waiting = [j for j in jobs_of(node) if j["study_uid"] in later]
        assert len(waiting) == 3, waiting
        assert all(j["state"] in ("queued", "running") and j["worker"] is None for j in waiting), waiting
        time.sleep(1.0)
    broker.start()
    jobs = wait_jobs(node, "all 5 done", all_done(5), 180, *workers)
    objects = orthanc_objects(orthanc)
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
    send_studies(node, tmp_path / "in", 1)
    jobs = wait_jobs(node, "the job failed", lambda js: len(js) == 1 and js[0]["state"] == "failed", 120, w)
    job = jobs[0]
    assert job["attempts"] == 3, job  # scale.max_attempts runs
    assert "pipeline process failed (exit code 70)" in job["last_error"], job["last_error"]
    assert "dead-letter queue mrinode.dead" in job["last_error"], job["last_error"]
    (task,) = [t for t in tasks_of(node) if t["job_id"] == job["id"]]
    assert task["deliveries"] == 3 and task["state"] == "failed"
    # the backoff: 1 s then 2 s between the runs (scale.backoff_initial_s = 1)
    log = w.log_path.read_text()
    assert "run 1 failed" in log and "retried in 1 s" in log and "retried in 2 s" in log, w.log_tail()
    # the message itself is kept in the dead-letter queue
    with Connection(broker.url) as conn:
        _, count, _ = conn.default_channel.queue_declare("mrinode.dead", passive=True)
    assert count == 1
    assert orthanc_objects(orthanc) == {}
    # the worker's warm process was restarted after each crash, and the node's /metrics counts it
    assert 'mrinode_worker_restarts_total{reason="crash"} 3.0' in node.api("GET", "/metrics").text


def test_the_node_killed_mid_flight_resumes_from_its_job_table(tmp_path: Path, broker: RabbitBroker,
                                                               stack: ExitStack) -> None:
    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc"))
    node = node_for(stack, tmp_path, broker, orthanc)
    workers = [worker_for(stack, tmp_path, f"r{i}", broker, node) for i in (1, 2)]
    uids = send_studies(node, tmp_path / "in", 6)
    wait_jobs(node, "a job running on a worker", lambda js: any(j["state"] == "running" and j["worker"] for j in js),
              120, *workers)
    node.kill9()  # tasks in the broker and on the workers; results on their way back
    time.sleep(2.0)
    node.start()
    jobs = wait_jobs(node, "all 6 done", all_done(6), 180, *workers)
    objects = orthanc_objects(orthanc)
    assert sorted(objects) == sorted(uids)
    assert set(objects.values()) == {1}, objects  # a result of a task sent before the kill was not exported too
    tasks = tasks_of(node)
    for j in jobs:  # every job's result came from its newest task; the older ones were dropped as stale
        mine = sorted((t for t in tasks if t["job_id"] == j["id"]), key=lambda t: t["sent_at"])
        assert mine[-1]["state"] == "result", [dict(t) for t in mine]
    assert len(tasks) > len(jobs)  # the running jobs were sent again after the restart
