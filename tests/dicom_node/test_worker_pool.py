"""The warm worker process itself (real child processes): answers, per-job logs, failures, parent death."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dicom_node.config import parse_config
from dicom_node.config_models import ConfigError
from dicom_node.pipelines import PipelineRequest, PipelineResult
from dicom_node.workers.pool import worker_devices
from dicom_node.workers.process import WarmProcess, device_env
from tests.support.mrfiles import write_mr_series

NOISY = "tests.dicom_node.test_worker_pool:noisy_pipeline"
WARMABLE = "tests.dicom_node.test_worker_pool:warmable_pipeline"
TEST = "dicom_node.pipelines.testing:run"


def noisy_pipeline(request: PipelineRequest) -> PipelineResult:
    """A pipeline that prints, writes to fd 1 and 2 and logs (run in the child)."""
    tag = request.options["tag"]
    print(f"printed {tag}")
    sys.stdout.flush()
    os.write(1, f"raw stdout {tag}\n".encode())
    os.write(2, f"raw stderr {tag}\n".encode())
    logging.getLogger("noisy").warning("logged %s", tag)
    return PipelineResult(outputs=[], summary={"tag": tag})


class _Warmable:
    """A pipeline with a ``warmup`` (run in the child): its summary says what was warmed up before it ran."""

    warmed: list[tuple[str, str]] = []

    def warmup(self, options: dict[str, Any], device: str) -> None:
        self.warmed.append((options["tag"], device))

    def __call__(self, request: PipelineRequest) -> PipelineResult:
        return PipelineResult(outputs=[], summary={"warmed": list(self.warmed)})


warmable_pipeline = _Warmable()


def _spec(job_id: int, out: Path, function: str, options: dict[str, Any], paths: list[Path] | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    return {"job_id": job_id, "study_uid": "1.2.3", "instance_paths": [str(p) for p in paths or []], "out_dir": str(out),
            "device": "cpu", "pipelines": [{"name": "p", "function": function, "options": options}]}


@pytest.fixture
def worker() -> Any:
    w = WarmProcess("cpu", [{"function": TEST, "options": {}}])
    w.start()
    yield w
    w.kill()


def test_one_process_runs_jobs_in_turn_each_with_its_own_log(worker: WarmProcess, tmp_path: Path) -> None:
    stop = threading.Event()
    pid = worker.pid
    for job_id, tag in ((1, "first"), (2, "second")):
        out = tmp_path / f"job-{job_id}"
        assert worker.send(_spec(job_id, out, NOISY, {"tag": tag}))
        answer = worker.wait_answer(job_id, 60, stop)
        assert answer.how == "done" and answer.message["ok"] is True, answer
        assert answer.message["loads"] == [] and answer.message["rss_mb"] > 0
        assert (out / "result.json").is_file()
        text = (out / "worker.log").read_text()
        for line in (f"printed {tag}", f"raw stdout {tag}", f"raw stderr {tag}", f"logged {tag}"):
            assert line in text, text
        other = "second" if tag == "first" else "first"
        assert other not in text  # each job's output in its own log, none in the answers
    assert worker.pid == pid and worker.alive()


def test_pipelines_are_warmed_up_before_the_first_job(tmp_path: Path) -> None:
    w = WarmProcess("cpu", [{"function": WARMABLE, "options": {"tag": "model-a"}}])
    w.start()
    try:
        assert w.send(_spec(1, tmp_path / "a", WARMABLE, {"tag": "model-a"}))
        assert w.wait_answer(1, 60, threading.Event()).message["ok"] is True
    finally:
        w.kill()
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["summary"]["p"]["warmed"] == [["model-a", "cpu"]]


def test_failed_pipeline_answers_not_ok_and_the_process_serves_on(worker: WarmProcess, tmp_path: Path) -> None:
    stop = threading.Event()
    _, paths = write_mr_series(tmp_path / "in", 2)
    assert worker.send(_spec(1, tmp_path / "a", TEST, {"fail": "exception"}, paths))
    answer = worker.wait_answer(1, 120, stop)
    assert answer.how == "done" and answer.message["ok"] is False
    assert "test pipeline asked to fail" in (tmp_path / "a" / "worker.log").read_text()
    assert not (tmp_path / "a" / "result.json").exists()
    assert worker.send(_spec(2, tmp_path / "b", TEST, {}, paths))
    assert worker.wait_answer(2, 120, stop).message["ok"] is True
    assert (tmp_path / "b" / "result.json").is_file()


def test_crash_timeout_and_stop_are_told_apart(worker: WarmProcess, tmp_path: Path) -> None:
    stop = threading.Event()
    _, paths = write_mr_series(tmp_path / "in", 2)
    assert worker.send(_spec(1, tmp_path / "a", TEST, {"fail": "crash"}, paths))
    assert worker.wait_answer(1, 120, stop).how == "crash"
    assert worker.how_it_ended() == "exit code 70" and not worker.alive()

    worker.start()
    assert worker.send(_spec(2, tmp_path / "b", TEST, {"sleep_s": 30}, paths))
    t0 = time.monotonic()
    assert worker.wait_answer(2, 1.0, stop).how == "timeout"
    assert time.monotonic() - t0 < 5 and worker.alive()
    stop.set()
    assert worker.wait_answer(2, 60, stop).how == "stopped"
    worker.kill()
    assert not worker.alive()


def test_worker_dies_with_its_parent(tmp_path: Path) -> None:
    """A node killed with SIGKILL mid-job leaves no worker behind running an orphaned job."""
    spec = _spec(1, tmp_path / "out", TEST, {"sleep_s": 60})
    code = ("import os, sys, time\nfrom dicom_node.workers.process import WarmProcess\n"
            f"w = WarmProcess('cpu')\nw.start()\nw.send({spec!r})\nprint(w.pid, flush=True)\n"
            "time.sleep(2)\nos.kill(os.getpid(), 9)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    pid = int(r.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
        if state in ("Z", "X"):
            break
        time.sleep(0.1)
    else:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, 9)
            raise AssertionError("the worker outlived its parent")


def test_devices(tmp_path: Path) -> None:
    assert device_env("cuda:1") == ("cuda", {"CUDA_VISIBLE_DEVICES": "1"})
    assert device_env("cpu") == ("cpu", {"CUDA_VISIBLE_DEVICES": ""})
    base = {"node": {"data_dir": str(tmp_path)}}
    assert worker_devices(parse_config({**base, "workers": {"count": 2, "device": "cpu"}})) == ["cpu", "cpu"]
    assert worker_devices(parse_config({**base, "workers": {"devices": ["cuda:0", "cuda:1"]}})) == ["cuda:0", "cuda:1"]
    with pytest.raises(ConfigError, match=r"workers\.devices\[1\]"):
        worker_devices(parse_config({**base, "workers": {"devices": ["cpu", "gpu0"]}}))


def test_recorded_results_wake_the_exporter_at_once(tmp_path: Path) -> None:
    """A job's results recorded by the pool call ``on_processed`` (the node wakes its exporter with it, so
    results do not wait for the exporter's next idle poll)."""
    from dicom_node.audit import AuditLog
    from dicom_node.metrics import NodeMetrics
    from dicom_node.queue import JobQueue
    from dicom_node.store import InstanceRecord, Store
    from dicom_node.tracker import Tracker
    from dicom_node.workers.pool import WorkerPool

    cfg = parse_config({"node": {"data_dir": str(tmp_path / "node")}, "workers": {"device": "cpu"},
                        "pipelines": [{"name": "test", "function": TEST}]})
    store = Store(cfg.db_path)
    queue = JobQueue(store)
    tracker = Tracker(cfg, store, NodeMetrics(), AuditLog(cfg.audit_log_path))
    study_uid, files = write_mr_series(tmp_path / "in", 3, size=16)
    for n, path in enumerate(files):
        store.add_instance(InstanceRecord(sop_uid=f"1.2.9.{n}", study_uid=study_uid, series_uid="1.2.9", sop_class="",
                                          modality="MR", series_desc="AX T1", transfer_syntax="", path=str(path),
                                          size=path.stat().st_size, calling_ae="TEST"))
    assert tracker.complete(study_uid) is not None
    pool = WorkerPool(cfg, store, queue, NodeMetrics())
    woken = threading.Event()
    pool.on_processed = woken.set
    job = queue.claim_next()
    assert job is not None
    try:
        pool.run_job(job, threading.Event())
    finally:
        pool.kill_all()
    done = queue.get(job.id)
    assert done is not None and done.state == "exporting", done
    assert woken.is_set()
