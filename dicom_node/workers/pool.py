"""The supervisor: one thread per warm worker process, claiming jobs and watching the process.

Each configured device (``[workers] devices``; empty: ``count`` processes on ``device``) gets
a thread and a :class:`~dicom_node.workers.process.WarmProcess`. The thread claims a
``queued`` job, sends it to its process and waits for the answer. A process that dies
(crash, signal) or does not answer within ``workers.timeout_s`` is killed and restarted and
the job counts as a failed run: re-queued until ``workers.max_attempts`` runs, then
``failed`` with the reason. Between jobs, never during one, a process is replaced after
``max_jobs_per_worker`` jobs or when its resident memory is above ``max_rss_mb``. Each
restart is counted in ``mrinode_worker_restarts_total{reason}``; each model a worker loads in
``mrinode_model_loads_total{model,version}``.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_node.claim_loop import claim_loop
from dicom_node.config_models import ConfigError
from dicom_node.logs import uid_tag
from dicom_node.workers.process import WarmProcess, device_env, memory_mb

if TYPE_CHECKING:
    from dicom_node.config import NodeConfig
    from dicom_node.metrics import NodeMetrics
    from dicom_node.queue import Job, JobQueue
    from dicom_node.store import Store

__all__ = ["WorkerPool", "worker_devices"]

log = logging.getLogger("dicom_node.worker")

#: A process that dies this soon after its start, without a job, is restarted after a pause.
_EARLY_DEATH_S = 10.0


def worker_devices(cfg: NodeConfig) -> list[str]:
    """The device of each warm worker process.

    Raises
    ------
    ConfigError
        If a ``workers.devices`` entry is not ``cpu``, ``auto``, ``cuda`` or ``cuda:N``.
    """
    devices = list(cfg.workers.devices) or [cfg.workers.device] * cfg.workers.count
    for i, d in enumerate(devices):
        try:
            device_env(d)
        except ValueError as exc:
            raise ConfigError(f"config key 'workers.devices[{i}]': {exc}") from None
    return devices


class WorkerPool:
    """Threads that claim jobs and supervise one warm worker process each.

    Parameters
    ----------
    cfg : NodeConfig
        The configuration (``[workers]``, ``[[pipelines]]``).
    store : Store
        The store database.
    queue : JobQueue
        The job queue.
    metrics : NodeMetrics
        Stage durations, finished jobs, model loads and worker restarts.

    Raises
    ------
    ConfigError
        On an unknown device name.
    """

    def __init__(self, cfg: NodeConfig, store: Store, queue: JobQueue, metrics: NodeMetrics) -> None:
        self.cfg = cfg
        self.store = store
        self.queue = queue
        self.metrics = metrics
        self.wake = threading.Event()
        #: Called after a job's results are recorded (the node wakes its exporter: results go out at
        #: once instead of at the exporter's next idle poll, up to 0.5 s later).
        self.on_processed: Callable[[], object] | None = None
        warm = [{"function": p.function, "options": p.options} for p in cfg.pipelines if p.enabled]
        self.processes = [WarmProcess(d, warm, cfg.workers.model_cache_mb) for d in worker_devices(cfg)]
        self._next = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """The number of worker processes (one :meth:`run` thread each)."""
        return len(self.processes)

    def _spec(self, job: Job, out_dir: Path, worker: WarmProcess) -> dict[str, Any]:
        return {
            "job_id": job.id,
            "study_uid": job.study_uid,
            "instance_paths": [str(p) for p in self.store.instance_paths(job.study_uid)],
            "out_dir": str(out_dir),
            "device": worker.job_device,
            "pipelines": [
                {"name": p.name, "function": p.function, "options": p.options,
                 "required_sequences": list(p.required_sequences), "optional_sequences": list(p.optional_sequences)}
                for p in self.cfg.pipelines
                if p.enabled
            ],
        }

    def _restart(self, worker: WarmProcess, reason: str, stop: threading.Event) -> None:
        """Replace a worker's process (``reason`` is the metric's label), unless shutting down."""
        old = worker.pid
        if reason.startswith("recycle"):
            worker.close()
        else:
            worker.kill()
        self.metrics.worker_restarts.labels(reason=reason).inc()
        if stop.is_set():
            return
        worker.start()
        log.info("worker on %s restarted (%s): pid %s -> %s", worker.device, reason, old, worker.pid)

    def _ensure_alive(self, worker: WarmProcess, stop: threading.Event) -> None:
        """Start the process, or restart it if it died while idle (with a pause if it dies at once)."""
        if worker.proc is None:
            worker.start()
            log.info("worker on %s started: pid %s", worker.device, worker.pid)
            return
        if worker.alive() or stop.is_set():
            return
        how = worker.how_it_ended()
        early = time.monotonic() - worker.started_at < _EARLY_DEATH_S
        log.warning("worker on %s (pid %s) ended while idle (%s)%s", worker.device, worker.pid, how,
                    "; restarting in 10 s" if early else "")
        if early and stop.wait(_EARLY_DEATH_S):
            return
        self._restart(worker, "crash", stop)

    def run_job(self, job: Job, stop: threading.Event, worker: WarmProcess | None = None) -> None:
        """Run one claimed job to ``exporting``, back to ``queued`` or ``failed``.

        Parameters
        ----------
        job : Job
            The claimed job.
        stop : threading.Event
            Set on shutdown: the job is re-queued, not failed.
        worker : WarmProcess, optional
            The process to run it in (default: the first).
        """
        worker = worker if worker is not None else self.processes[0]
        out_dir = self.cfg.results_dir / f"job-{job.id}"
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        spec = self._spec(job, out_dir, worker)
        if job.started_at is not None:
            self.metrics.job_stage_seconds.labels(stage="queued").observe(max(job.started_at - job.created_at, 0.0))
        if not spec["pipelines"]:
            self.queue.set_processed(job.id, out_dir, [], {"note": "no enabled pipelines"}, {"pipeline_s": 0.0})
            if self.on_processed is not None:
                self.on_processed()
            return
        self._ensure_alive(worker, stop)
        t0 = time.monotonic()
        answer = worker.wait_answer(job.id, self.cfg.workers.timeout_s, stop) if worker.send(spec) else None
        seconds = time.monotonic() - t0
        log_path = out_dir / "worker.log"
        if answer is not None and answer.how == "stopped":
            # Shutting down: the interrupted run is not the job's fault.
            worker.kill()
            self.queue.requeue_job(job.id)
            log.info("job %d interrupted by shutdown; queued for the next start", job.id)
            return
        if answer is not None and answer.how == "timeout":
            self._restart(worker, "timeout", stop)
            self._failed_run(job, f"the pipelines took longer than workers.timeout_s={self.cfg.workers.timeout_s:g} s "
                                  "and were stopped")
            return
        if answer is None or answer.how == "crash":
            how = worker.how_it_ended()
            self._restart(worker, "crash", stop)
            self._failed_run(job, f"pipeline process failed ({how}): {_tail(log_path)}")
            return
        worker.jobs += 1
        message = answer.message
        for model, version in message.get("loads") or []:
            self.metrics.model_loads.labels(model=str(model), version=str(version)).inc()
        result_file = out_dir / "result.json"
        if not message.get("ok") or not result_file.exists():
            self._failed_run(job, f"pipeline process failed: {_tail(log_path)}")
        else:
            result = json.loads(result_file.read_text())
            self.metrics.job_stage_seconds.labels(stage="pipeline").observe(seconds)
            self.queue.set_processed(job.id, out_dir, [Path(p) for p in result["outputs"]], result["summary"],
                                     _durations(seconds, result))
            if self.on_processed is not None:
                self.on_processed()
            log.info("job %d (study %s): pipelines done in %.1f s, %d outputs (worker on %s, pid %s, "
                     "%d model load(s), peak RSS %.0f MiB)", job.id, uid_tag(job.study_uid), seconds,
                     len(result["outputs"]), worker.device, worker.pid, len(message.get("loads") or []),
                     float(message.get("peak_rss_mb") or 0.0))
        self._recycle_if_due(worker, stop)

    def _recycle_if_due(self, worker: WarmProcess, stop: threading.Event) -> None:
        """Replace a process between jobs after ``max_jobs_per_worker`` jobs or above ``max_rss_mb``."""
        w = self.cfg.workers
        if worker.jobs >= w.max_jobs_per_worker:
            log.info("worker on %s (pid %s) ran %d jobs (workers.max_jobs_per_worker); replacing it", worker.device,
                     worker.pid, worker.jobs)
            self._restart(worker, "recycle_jobs", stop)
            return
        rss = memory_mb(worker.pid) if worker.pid is not None else 0.0
        if w.max_rss_mb and rss > w.max_rss_mb:
            log.info("worker on %s (pid %s) holds %.0f MiB, above workers.max_rss_mb=%d; replacing it",
                     worker.device, worker.pid, rss, w.max_rss_mb)
            self._restart(worker, "recycle_rss", stop)

    def _failed_run(self, job: Job, error: str) -> None:
        retry = job.attempts < self.cfg.workers.max_attempts
        log.warning("job %d run %d/%d failed: %s", job.id, job.attempts, self.cfg.workers.max_attempts, error)
        self.queue.set_run_failed(job.id, error, retry=retry, delay_s=2.0)
        if not retry:
            self.metrics.jobs_finished.labels(state="failed").inc()

    def run(self, stop: threading.Event) -> None:
        """One worker thread: take the next process, then claim and run jobs in it until ``stop``.

        Call it :attr:`size` times, each in its own thread.
        """
        with self._lock:
            worker = self.processes[self._next % len(self.processes)]
            self._next += 1

        def claim() -> Job | None:
            if self.processes[0].pipelines:  # no enabled pipeline: no job needs a worker process
                self._ensure_alive(worker, stop)
            return self.queue.claim_next() if not stop.is_set() else None

        try:
            claim_loop(
                stop,
                self.wake,
                claim,
                lambda job: self.run_job(job, stop, worker),
                lambda job, exc: self._failed_run(job, f"supervisor error: {exc}"),
                "pipeline",
            )
        finally:
            worker.close()

    def kill_all(self) -> None:
        """Kill every worker process (the last step of a shutdown)."""
        for worker in self.processes:
            worker.kill()


def _durations(seconds: float, result: dict[str, Any]) -> dict[str, float]:
    """The job's durations: the whole run (``pipeline_s``) and the analysis stage's own (``analysis_identify_s``…)."""
    out = {"pipeline_s": round(seconds, 3)}
    stages = (result.get("analysis") or {}).get("seconds")
    if isinstance(stages, dict):
        out.update({f"analysis_{k}_s": round(float(v), 3) for k, v in stages.items()
                    if k != "total" and isinstance(v, int | float)})
    return out


def _tail(path: Path, lines: int = 8, max_chars: int = 4000) -> str:
    """The last lines of a job's worker.log in full, for the job's error (the log is already scrubbed).

    Whole lines are kept (the first of the error starts on a new line, so ``jobs show`` prints
    a traceback's end as it is); lines are dropped from the start to stay under ``max_chars``.
    """
    try:
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return "(no worker.log)"
    while len(tail) > 1 and sum(len(x) + 1 for x in tail) > max_chars:
        tail.pop(0)
    return "\n" + "\n".join(tail)[-max_chars:]
