"""The node's side of the Celery engine: it replaces the local worker pool when ``engine = "celery"``.

One thread claims ``queued`` jobs from the node's job table (``queued → running``) and sends
one Celery task per job to the queue of its device kind. The job table stays the source of
truth: a worker reports to the node's API (:mod:`.router`) when it starts a task, uploads the
results, or gives up, and :class:`CeleryDispatcher` applies that to the job (``exporting``,
a counted attempt, ``failed``); the exporter then sends the results as it does for the local pool.

A task is recognised by its id (:class:`~dicom_node.scale.tasks_table.TaskTable`): a message of
an older task (re-sent after a node restart) or of a job already processed is told to stop, so
a re-delivered message is harmless, and deterministic result UIDs make a second run replace.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from dicom_node.claim_loop import claim_loop
from dicom_node.config_models import ConfigError
from dicom_node.logs import uid_tag
from dicom_node.scale.app import (
    QUEUES,
    TASK_NAME,
    check_broker_client,
    dead_letter_queue,
    job_queue,
    make_app,
)
from dicom_node.scale.tasks_table import TaskTable

if TYPE_CHECKING:
    from dicom_node.config import NodeConfig
    from dicom_node.metrics import NodeMetrics
    from dicom_node.queue import Job, JobQueue
    from dicom_node.store import Store

__all__ = ["CeleryDispatcher", "Verdict", "check_node_config", "job_message"]

log = logging.getLogger("dicom_node.scale")

#: Seconds between tries while the broker cannot be reached.
_BROKER_PAUSE_S = 2.0


def check_node_config(cfg: NodeConfig) -> None:
    """The checks of ``[scale]`` that need other sections, for the node (before it listens).

    Raises
    ------
    ConfigError
        Naming the key: no API token, ``consumer_timeout_s`` not above the longest job, an
        unknown name in ``gpu_pipelines``.
    """
    if cfg.api.resolve_token() is None:
        raise ConfigError("config key 'api.token': engine = 'celery' needs the API's bearer token (api.token or "
                          "api.token_file): workers fetch studies and upload results with it.")
    if not cfg.api.enabled:
        raise ConfigError("config key 'api.enabled': engine = 'celery' needs the REST API (workers fetch studies "
                          "and upload results there).")
    if cfg.scale.consumer_timeout_s <= cfg.workers.timeout_s:
        raise ConfigError(f"config key 'scale.consumer_timeout_s': {cfg.scale.consumer_timeout_s:g} s must be above "
                          f"workers.timeout_s = {cfg.workers.timeout_s:g} s, the longest job (else the broker "
                          "takes a long job back from the worker running it).")
    check_broker_client(cfg)
    names = {p.name for p in cfg.pipelines}
    for i, n in enumerate(cfg.scale.gpu_pipelines):
        if n not in names:
            raise ConfigError(f"config key 'scale.gpu_pipelines[{i}]': {n!r} is not a [[pipelines]] name.")


def job_message(cfg: NodeConfig, job: Job, instance_paths: list[Path]) -> dict[str, Any]:
    """The task's keyword arguments for a job: what a worker needs besides the study's instances.

    ``instances`` are the spool paths relative to the spool folder (for ``data_access = "shared"``).
    """
    spool = cfg.spool_dir
    rel = []
    for p in instance_paths:
        try:
            rel.append(str(Path(p).relative_to(spool)))
        except ValueError:
            rel.append(str(p))
    return {
        "job_id": job.id,
        "study_uid": job.study_uid,
        "instances": rel,
        "pipelines": [
            {"name": p.name, "function": p.function, "options": p.options,
             "required_sequences": list(p.required_sequences), "optional_sequences": list(p.optional_sequences)}
            for p in cfg.pipelines
            if p.enabled
        ],
    }


class Verdict:
    """An answer to a worker: an HTTP status and a JSON body."""

    def __init__(self, status: int, **body: Any) -> None:
        self.status = status
        self.body = body


class CeleryDispatcher:
    """Sends queued jobs to Celery workers and applies their reports to the job table.

    It stands where :class:`~dicom_node.workers.pool.WorkerPool` stands in the service
    (``wake``, ``size``, ``run(stop)``, ``kill_all()``).

    Parameters
    ----------
    cfg : NodeConfig
        The configuration (``[scale]``, ``[workers] timeout_s``, ``[[pipelines]]``).
    store : Store
        The store database.
    queue : JobQueue
        The job queue.
    metrics : NodeMetrics
        The node's metrics; ``mrinode_worker_jobs_total{worker}`` is added to its registry.

    Raises
    ------
    ConfigError
        See :func:`check_node_config`.
    """

    def __init__(self, cfg: NodeConfig, store: Store, queue: JobQueue, metrics: NodeMetrics) -> None:
        check_node_config(cfg)
        self.cfg = cfg
        self.store = store
        self.queue = queue
        self.metrics = metrics
        self.tasks = TaskTable(store)
        self.app = make_app(cfg)
        self.queue_name = job_queue(cfg)
        self.wake = threading.Event()
        self.size = 1
        self._declared = False
        self._broker_ok_at = 0.0
        self._broker_down = False
        self._lock = threading.Lock()
        self.worker_jobs = Counter("mrinode_worker_jobs", "Jobs whose results a worker sent back, by worker",
                                   ["worker"], registry=metrics.registry)
        self.task_deliveries = Counter("mrinode_scale_deliveries", "Task deliveries to workers, by worker",
                                       ["worker"], registry=metrics.registry)

    # ------------------------------------------------------------- sending
    def _declare(self) -> None:
        """Declare the queues and the dead-letter queue (so jobs sent before any worker is up are kept)."""
        from dicom_node.scale.app import _queues

        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            channel = conn.default_channel
            dead_letter_queue(self.cfg)(channel).declare()
            for q in _queues(self.cfg):
                q(channel).declare()
        self._declared = True
        log.info("broker reached; queues %s and dead-letter queue %s declared", ", ".join(QUEUES),
                 self.cfg.scale.dead_letter_queue)

    def _claim(self, stop: threading.Event) -> Job | None:
        if stop.is_set() or time.monotonic() < self._broker_ok_at:
            return None
        if not self._declared:
            try:
                self._declare()
            except Exception as exc:  # kombu/amqp raise many kinds while the broker is down
                # (a PRECONDITION_FAILED here: the queues exist with another scale.dead_letter_queue)
                log.warning("cannot declare the queues on the broker (%s: %s); trying again in %.0f s",
                            type(exc).__name__, exc, _BROKER_PAUSE_S)
                self._broker_ok_at = time.monotonic() + _BROKER_PAUSE_S
                return None
        return self.queue.claim_next()

    def dispatch(self, job: Job) -> None:
        """Send one claimed job's task (a job without enabled pipelines is processed at once).

        When the broker cannot be reached the job goes back to ``queued`` (the run is not
        counted) and sending pauses for a moment.
        """
        message = job_message(self.cfg, job, self.store.instance_paths(job.study_uid))
        if not message["pipelines"]:
            out_dir = self.cfg.results_dir / f"job-{job.id}"
            out_dir.mkdir(parents=True, exist_ok=True)
            self.queue.set_processed(job.id, out_dir, [], {"note": "no enabled pipelines"}, {"pipeline_s": 0.0})
            return
        task_id = str(uuid.uuid4())
        self.tasks.add(task_id, job.id, self.queue_name)
        try:
            # kwargsrepr: what events, Flower and Celery's logs show of the task (no study UID, no paths)
            self.app.send_task(TASK_NAME, kwargs=message, task_id=task_id, queue=self.queue_name,
                               routing_key=self.queue_name, kwargsrepr=repr({"job_id": job.id}), retry=True,
                               retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                             "interval_max": 1.0})
        except Exception as exc:  # the broker is down: keep the job queued, try again shortly
            self.tasks.drop(task_id)
            self.queue.requeue_job(job.id)
            self._broker_ok_at = time.monotonic() + _BROKER_PAUSE_S
            if not self._broker_down:
                log.warning("broker unreachable (%s: %s): jobs stay queued here until it is back", type(exc).__name__,
                            exc)
            self._broker_down = True
            return
        if self._broker_down:
            log.info("broker reachable again: sending the queued jobs")
            self._broker_down = False
        if job.started_at is not None:
            self.metrics.job_stage_seconds.labels(stage="queued").observe(max(job.started_at - job.created_at, 0.0))
        log.info("job %d (study %s): task %s sent to queue %s", job.id, uid_tag(job.study_uid), task_id[:8],
                 self.queue_name)

    def run(self, stop: threading.Event) -> None:
        """The dispatcher thread: claim and send until ``stop``.

        Uploads left half-done by a previous run of the node are removed first (their jobs were
        re-queued at the start and sent again, so their results would be refused anyway).
        """
        shutil.rmtree(self.cfg.results_dir / ".incoming", ignore_errors=True)
        claim_loop(stop, self.wake, lambda: self._claim(stop), self.dispatch, self._dispatch_failed, "dispatch")

    def _dispatch_failed(self, job: Job, exc: Exception) -> None:
        """An unexpected error while sending a job: it stays queued; sending pauses (no busy loop)."""
        self.queue.requeue_job(job.id)
        self._broker_ok_at = time.monotonic() + _BROKER_PAUSE_S

    def kill_all(self) -> None:
        """Nothing runs here (the workers are elsewhere); the broker keeps the tasks."""

    # ------------------------------------------------------ worker reports
    def _task_of_running_job(self, task_id: str) -> tuple[Any, Job] | Verdict:
        task = self.tasks.get(task_id)
        if task is None:
            return Verdict(409, run=False, reason="unknown task (not sent by this node)")
        job = self.queue.get(task.job_id)
        current = self.tasks.current(task.job_id)
        if job is None or current is None or current.task_id != task_id:
            return Verdict(409, run=False, reason="stale task: the job was sent again since")
        if job.state != "running":
            return Verdict(409, run=False, reason=f"the job is {job.state}; nothing to run")
        return task, job

    def accepts_upload(self, task_id: str, delivery: int) -> bool:
        """Whether files of this delivery are expected: the task is started and has had that many deliveries."""
        task = self.tasks.get(task_id)
        return task is not None and task.state == "started" and 1 <= delivery <= task.deliveries

    def stage_dir(self, task_id: str, delivery: int) -> Path:
        """Where a delivery's uploaded result files are kept until its result is accepted."""
        return self.cfg.results_dir / ".incoming" / f"{task_id}.{delivery}"

    def on_start(self, task_id: str, worker: str) -> Verdict:
        """A worker is about to run a task: count the delivery; say whether to run it.

        Returns
        -------
        Verdict
            200 ``{"run": true, "delivery": n}``; 409 for a stale task or a job no longer
            running (the worker drops the message); 410 when the job's attempts are spent (the
            job is failed here and the worker sends the message to the dead-letter queue).
        """
        with self._lock:
            found = self._task_of_running_job(task_id)
            if isinstance(found, Verdict):
                return found
            task, job = found
            deliveries = self.tasks.started(task_id, worker)
            self.task_deliveries.labels(worker=worker).inc()
            now = time.time()
            with self.store.transaction() as c:
                # the first delivery was counted when the job was claimed; each later one is another run
                c.execute("UPDATE jobs SET worker=?, started_at=?, attempts=attempts+?, updated_at=? WHERE id=?",
                          (worker, now, 1 if deliveries > 1 else 0, now, job.id))
            if deliveries > self.cfg.scale.max_attempts:
                error = (f"given up after {deliveries - 1} deliveries of its task (scale.max_attempts = "
                         f"{self.cfg.scale.max_attempts}); last error: {task.last_error or 'the worker was lost'}; "
                         f"message sent to the dead-letter queue {self.cfg.scale.dead_letter_queue}")
                self.tasks.set_state(task_id, "failed", error=error)
                self.queue.set_run_failed(job.id, error, retry=False)
                self.metrics.jobs_finished.labels(state="failed").inc()
                log.warning("job %d failed: %s", job.id, error)
                return Verdict(410, run=False, reason=error)
        stage = self.stage_dir(task_id, deliveries)
        if stage.exists():
            shutil.rmtree(stage)
        log.info("job %d: task %s delivery %d started on worker %s", job.id, task_id[:8], deliveries, worker)
        return Verdict(200, run=True, delivery=deliveries, job_id=job.id)

    def on_result(self, task_id: str, delivery: int, result: dict[str, Any]) -> Verdict:
        """A worker's results are uploaded: move them into the job's folder, ``exporting``.

        Parameters
        ----------
        task_id : str
            The task.
        delivery : int
            The delivery whose files were uploaded (:meth:`stage_dir`).
        result : dict
            ``outputs`` (paths relative to the upload), ``summary``, ``durations``, ``loads``
            (``[[model, version], …]``), ``worker`` and ``run_done_at`` (the worker's clock).
        """
        stage = self.stage_dir(task_id, delivery)
        with self._lock:
            found = self._task_of_running_job(task_id)
            if isinstance(found, Verdict):
                shutil.rmtree(stage, ignore_errors=True)
                return found
            _, job = found
            outputs = [str(o) for o in result.get("outputs") or []]
            missing = [o for o in outputs if not (stage / o).is_file()]
            if missing:
                return Verdict(422, accepted=False, reason=f"{len(missing)} listed output(s) were not uploaded")
            out_dir = self.cfg.results_dir / f"job-{job.id}"
            if out_dir.exists():
                shutil.rmtree(out_dir)
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            if stage.exists():
                stage.rename(out_dir)
            else:
                out_dir.mkdir(parents=True)
            now = time.time()
            durations = {str(k): float(v) for k, v in (result.get("durations") or {}).items()
                         if isinstance(v, int | float)}
            worker = str(result.get("worker") or "")
            self.queue.set_processed(job.id, out_dir, [out_dir / o for o in outputs],
                                     dict(result.get("summary") or {}), durations)
            with self.store.transaction() as c:
                c.execute("UPDATE jobs SET worker=? WHERE id=?", (worker, job.id))
            run_done = result.get("run_done_at")
            self.tasks.set_state(task_id, "result", result_at=now,
                                 run_done_at=float(run_done) if isinstance(run_done, int | float) else None)
        self.worker_jobs.labels(worker=worker).inc()
        if "pipeline_s" in durations:
            self.metrics.job_stage_seconds.labels(stage="pipeline").observe(durations["pipeline_s"])
        for model, version in result.get("loads") or []:
            self.metrics.model_loads.labels(model=str(model), version=str(version)).inc()
        log.info("job %d (study %s): %d result(s) back from worker %s", job.id, uid_tag(job.study_uid),
                 len(outputs), worker)
        return Verdict(200, accepted=True)

    def count_restarts(self, restarts: dict[str, int]) -> None:
        """Add a worker's warm-process restarts to ``mrinode_worker_restarts_total{reason}``."""
        for reason, n in restarts.items():
            if n > 0 and reason in ("crash", "timeout", "recycle_jobs", "recycle_rss"):
                self.metrics.worker_restarts.labels(reason=reason).inc(n)

    def on_failed(self, task_id: str, error: str, final: bool) -> Verdict:
        """A worker's run failed: record the error; ``final`` fails the job (its message is dead-lettered)."""
        with self._lock:
            found = self._task_of_running_job(task_id)
            if isinstance(found, Verdict):
                return found
            _, job = found
            error = error[:2000]
            if final:
                self.tasks.set_state(task_id, "failed", error=error)
                self.queue.set_run_failed(job.id, f"{error} (given up; message sent to the dead-letter queue "
                                                  f"{self.cfg.scale.dead_letter_queue})", retry=False)
                self.metrics.jobs_finished.labels(state="failed").inc()
            else:
                self.tasks.set_state(task_id, "started", error=error)
                with self.store.transaction() as c:
                    c.execute("UPDATE jobs SET last_error=?, updated_at=? WHERE id=?", (error, time.time(), job.id))
        log.warning("job %d: run on a worker failed%s: %s", job.id, " for good" if final else "; retried", error)
        return Verdict(200, recorded=True)
