"""Workers: run a job's pipelines in a child process, so a crash cannot take the node down.

The supervisor (:class:`WorkerPool`, threads in the ``serve`` process) claims ``queued``
jobs and starts ``python -m dicom_node.worker`` for each, passing a JSON job spec on
stdin. The child imports every enabled pipeline by its ``"module:function"`` reference,
runs it, and writes ``result.json`` into the job's result folder. A non-zero exit, a
signal, a timeout or a missing ``result.json`` is a failed run: the job is re-queued
until ``workers.max_attempts`` runs, then ``failed`` with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_node.claim_loop import claim_loop
from dicom_node.jobrun import run_spec
from dicom_node.logs import configure_logging, uid_tag

if TYPE_CHECKING:
    from dicom_node.config import NodeConfig
    from dicom_node.metrics import NodeMetrics
    from dicom_node.queue import Job, JobQueue
    from dicom_node.store import Store

__all__ = ["WorkerPool", "main", "run_spec"]

log = logging.getLogger(__name__)


def main() -> int:
    """Child-process entry point: job spec JSON on stdin, ``result.json`` in ``out_dir``."""
    # worker.log: the same safe formatting as the node's log (UIDs hashed, controls escaped,
    # tracebacks and warnings through logging); highdicom's INFO lines are not kept.
    configure_logging("INFO")
    spec = json.loads(sys.stdin.read())
    result = run_spec(spec)
    tmp = Path(spec["out_dir"]) / "result.json.tmp"
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, Path(spec["out_dir"]) / "result.json")
    return 0


class WorkerPool:
    """Threads that claim jobs and supervise their child processes.

    Parameters
    ----------
    cfg : NodeConfig
        The configuration (``[workers]``, ``[[pipelines]]``).
    store : Store
        The store database.
    queue : JobQueue
        The job queue.
    metrics : NodeMetrics
        Stage durations and finished jobs.
    """

    def __init__(self, cfg: NodeConfig, store: Store, queue: JobQueue, metrics: NodeMetrics) -> None:
        self.cfg = cfg
        self.store = store
        self.queue = queue
        self.metrics = metrics
        self.wake = threading.Event()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def _spec(self, job: Job, out_dir: Path) -> dict[str, Any]:
        return {
            "job_id": job.id,
            "study_uid": job.study_uid,
            "instance_paths": [str(p) for p in self.store.instance_paths(job.study_uid)],
            "out_dir": str(out_dir),
            "device": self.cfg.workers.device,
            "pipelines": [
                {"name": p.name, "function": p.function, "options": p.options}
                for p in self.cfg.pipelines
                if p.enabled
            ],
        }

    def run_job(self, job: Job, stop: threading.Event) -> None:
        """Run one claimed job to ``exporting``, back to ``queued`` or ``failed``."""
        out_dir = self.cfg.results_dir / f"job-{job.id}"
        if out_dir.exists():
            import shutil

            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        spec = self._spec(job, out_dir)
        if job.started_at is not None:
            self.metrics.job_stage_seconds.labels(stage="queued").observe(max(job.started_at - job.created_at, 0.0))
        t0 = time.monotonic()
        if not spec["pipelines"]:
            self.queue.set_processed(job.id, out_dir, [], {"note": "no enabled pipelines"}, {"pipeline_s": 0.0})
            return
        log_path = out_dir / "worker.log"
        env = dict(os.environ)
        env.setdefault("TCP_NODELAY", "1")
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dicom_node.worker"], stdin=subprocess.PIPE, stdout=log_file,
                stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
            with self._lock:
                self._procs[job.id] = proc
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(spec).encode())
                proc.stdin.close()
                deadline = time.monotonic() + self.cfg.workers.timeout_s
                while proc.poll() is None and time.monotonic() < deadline and not stop.is_set():
                    stop.wait(0.2)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                    if stop.is_set():
                        # Shutting down: the interrupted run is not the job's fault.
                        self.queue.requeue_job(job.id)
                        log.info("job %d interrupted by shutdown; queued for the next start", job.id)
                        return
                    self._failed_run(job, f"the pipelines took longer than workers.timeout_s="
                                          f"{self.cfg.workers.timeout_s:g} s and were stopped")
                    return
            finally:
                with self._lock:
                    self._procs.pop(job.id, None)
        seconds = time.monotonic() - t0
        result_file = out_dir / "result.json"
        if proc.returncode != 0 or not result_file.exists():
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            how = f"exit code {proc.returncode}" if proc.returncode >= 0 else f"signal {-proc.returncode}"
            self._failed_run(job, f"pipeline process failed ({how}): " + " | ".join(tail)[-600:])
            return
        result = json.loads(result_file.read_text())
        self.metrics.job_stage_seconds.labels(stage="pipeline").observe(seconds)
        self.queue.set_processed(job.id, out_dir, [Path(p) for p in result["outputs"]], result["summary"],
                                 {"pipeline_s": round(seconds, 3)})
        log.info("job %d (study %s): pipelines done in %.1f s, %d outputs", job.id, uid_tag(job.study_uid),
                 seconds, len(result["outputs"]))

    def _failed_run(self, job: Job, error: str) -> None:
        retry = job.attempts < self.cfg.workers.max_attempts
        log.warning("job %d run %d/%d failed: %s", job.id, job.attempts, self.cfg.workers.max_attempts, error)
        self.queue.set_run_failed(job.id, error, retry=retry, delay_s=2.0)
        if not retry:
            self.metrics.jobs_finished.labels(state="failed").inc()

    def run(self, stop: threading.Event) -> None:
        """One worker thread's loop: claim, run, repeat until ``stop``."""
        claim_loop(
            stop,
            self.wake,
            self.queue.claim_next,
            lambda job: self.run_job(job, stop),
            lambda job, exc: self._failed_run(job, f"supervisor error: {exc}"),
            "pipeline",
        )

    def kill_all(self) -> None:
        """Kill every running child process (used on shutdown)."""
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            if p.poll() is None:
                p.kill()


if __name__ == "__main__":  # pragma: no cover - the child process
    sys.exit(main())
