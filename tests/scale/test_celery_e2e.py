"""Scale-out on Celery + RabbitMQ, end to end (issue 17's acceptance): the work spreads and survives a lost worker.

Real parts only: a private RabbitMQ (Debian ``rabbitmq-server``, loopback, this network
namespace; one per module), Orthanc as the PACS, ``mrinode serve`` with ``[scale] engine =
"celery"`` and ``mrinode worker`` processes, each in its own folder (nothing shared but the
network: they fetch studies over WADO-RS from the node and upload results to it). Studies
are sent by dcmtk ``storescu``; the test pipeline sleeps 1 s per study so that the work, not
the start of the processes, is what a killed worker interrupts.
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.scale.broker import RabbitBroker
from tests.scale.e2e_support import (
    PIPELINE,
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
from tests.scale.workers import WorkerProcess
from tests.support.orthanc import OrthancServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_twenty_studies_on_two_workers_one_killed_mid_job(tmp_path: Path, broker: RabbitBroker,
                                                         stack: ExitStack) -> None:
    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc"))
    node = node_for(stack, tmp_path, broker, orthanc)
    w1 = worker_for(stack, tmp_path, "w1", broker, node)
    w2 = worker_for(stack, tmp_path, "w2", broker, node)
    uids = send_studies(node, tmp_path / "in", 20)

    # w1 gets a job; kill -9 it while the job runs (the pipeline sleeps 1 s): the broker gives it to w2.
    jobs = wait_jobs(node, "a job running on w1", lambda js: any(j["state"] == "running" and j["worker"] == "w1"
                                                              for j in js), 120, w1, w2)
    victim = next(j for j in jobs if j["state"] == "running" and j["worker"] == "w1")
    w1.kill9()
    jobs = wait_jobs(node, "all 20 done", all_done(20), 240, w2)

    by_id = {j["id"]: j for j in jobs}
    assert by_id[victim["id"]]["worker"] == "w2", by_id[victim["id"]]
    assert by_id[victim["id"]]["attempts"] == 2, by_id[victim["id"]]  # the lost run counted
    assert {j["worker"] for j in jobs} <= {"w1", "w2"}
    assert all(j["outputs"] for j in jobs)
    # Every study's one SEG is in Orthanc, none twice.
    objects = orthanc_objects(orthanc)
    assert sorted(objects) == sorted(uids)
    assert set(objects.values()) == {1}, objects
    # The node's task record: the victim's task was delivered twice, to w1 then w2.
    victim_tasks = [t for t in tasks_of(node) if t["job_id"] == victim["id"]]
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
    node = node_for(stack, tmp_path, broker, orthanc)
    uids = send_studies(node, tmp_path / "in", 4)
    # No worker yet: the jobs are sent to the broker and wait there.
    wait_jobs(node, "all 4 sent", lambda js: len(js) == 4 and all(j["state"] == "running" for j in js), 60)
    time.sleep(2.0)
    assert all(j["state"] == "running" and j["worker"] is None for j in jobs_of(node))
    late = WorkerProcess(tmp_path / "late", "late", broker_url=broker.url, node_url=node.url, token=TOKEN,
                         pipelines=[PIPELINE], workers={"max_jobs_per_worker": 2})
    stack.callback(late.kill9)
    late.start()
    jobs = wait_jobs(node, "all 4 done", all_done(4), 120, late)
    # its warm process is replaced between jobs, as the local pool's is (workers.max_jobs_per_worker = 2)
    assert late.log_path.read_text().count("replacing its warm process after 2 job(s)") == 2, late.log_tail()
    assert 'mrinode_worker_restarts_total{reason="recycle_jobs"} 2.0' in node.api("GET", "/metrics").text
    assert {j["worker"] for j in jobs} == {"late"}
    assert sorted(orthanc_objects(orthanc)) == sorted(uids)
    # `mrinode jobs` shows the worker of each job
    listing = subprocess.run([sys.executable, "-m", "dicom_node", "jobs", "list", "--config", str(node.config_path)],
                             capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    assert "WORKER" in listing[0]
    assert len([line for line in listing[1:] if " done " in line and " late " in line]) == 4, listing


def test_a_worker_reads_a_shared_spool_when_configured(tmp_path: Path, broker: RabbitBroker, stack: ExitStack) -> None:
    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc"))
    node = node_for(stack, tmp_path, broker, orthanc)
    w = WorkerProcess(tmp_path / "ws", "ws", broker_url=broker.url, node_url=node.url, token=TOKEN,
                      pipelines=[PIPELINE],
                      scale={"data_access": "shared", "shared_spool_dir": str(node.data_dir / "spool")})
    stack.callback(w.kill9)
    w.start()
    uids = send_studies(node, tmp_path / "in", 2)
    jobs = wait_jobs(node, "both done", all_done(2), 120, w)
    assert {j["worker"] for j in jobs} == {"ws"}
    assert sorted(orthanc_objects(orthanc)) == sorted(uids)
    log = w.log_path.read_text()
    assert log.count("3 instance(s) read from the shared spool") == 2 and "WADO-RS" not in log, w.log_tail()
