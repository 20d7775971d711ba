"""The worker's task: fetch the study, run it in a warm worker child, send the results to the node.

``mrinode worker`` runs a Celery worker with a thread pool of ``--concurrency`` slots; each
slot owns one :class:`~dicom_node.workers.process.WarmProcess`, the same warm child the
node's local pool runs (:mod:`dicom_node.workers.child`, models kept loaded between jobs).
One task is one job:

1. ``start`` to the node: it counts the delivery and says whether to run (a stale or already
   processed job's message is dropped; a job whose attempts are spent is dead-lettered);
2. the study's instances: WADO-RS from the node (default) or the shared spool folder;
3. the job spec to the warm child, as the local pool sends it; a crash or a timeout restarts
   the child;
4. the result files uploaded to the node, then the result: the job moves to ``exporting``;
5. a failed run is reported and retried with exponential backoff (``scale.backoff_*``) until
   ``scale.max_attempts`` runs; then the job fails and the message goes to the dead-letter queue.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_node.logs import uid_tag
from dicom_node.scale.app import TASK_NAME
from dicom_node.scale.remote import NodeClient, NodeUnreachableError, shared_paths
from dicom_node.workers.pool import _durations, _tail
from dicom_node.workers.process import WarmProcess, memory_mb

if TYPE_CHECKING:
    from celery import Celery

    from dicom_node.config import NodeConfig

__all__ = ["WorkerRuntime", "register_task"]

log = logging.getLogger("dicom_node.scale")


class _RunFailedError(RuntimeError):
    """A run of the pipelines failed (the message is the job's error)."""


class WorkerRuntime:
    """What a worker's task needs: the node's client, the warm children, the scratch folder.

    Parameters
    ----------
    cfg : NodeConfig
        The worker's configuration (``[scale]``, ``[workers]``, ``[[pipelines]]`` to warm up).
    client : NodeClient
        The node's API.
    device : str
        The device of the warm children (``cpu``, ``cuda:0``, …).
    concurrency : int
        Jobs at once (one warm child each).
    name : str
        The worker's name, as the node records it.
    """

    def __init__(self, cfg: NodeConfig, client: NodeClient, device: str, concurrency: int, name: str) -> None:
        self.cfg = cfg
        self.client = client
        self.device = device
        self.name = name
        self.stop = threading.Event()
        warm = [{"function": p.function, "options": p.options} for p in cfg.pipelines if p.enabled]
        self.processes = [WarmProcess(device, warm, cfg.workers.model_cache_mb) for _ in range(concurrency)]
        self._free: queue.Queue[WarmProcess] = queue.Queue()
        self.work_dir = cfg.scale.work_dir.expanduser().absolute()
        self._restarts: dict[str, int] = {}
        self._restarts_lock = threading.Lock()

    def start(self) -> None:
        """Start the warm children (they load their models in the background)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for p in self.processes:
            p.start()
            self._free.put(p)
        log.info("worker %s: %d warm process(es) on %s started", self.name, len(self.processes), self.device)

    def close(self) -> None:
        """Stop the children (the worker is shutting down)."""
        self.stop.set()
        for p in self.processes:
            p.kill()

    def _restarted(self, reason: str) -> None:
        with self._restarts_lock:
            self._restarts[reason] = self._restarts.get(reason, 0) + 1

    def take_restarts(self) -> dict[str, int]:
        """Warm-process restarts by reason since the last call (sent to the node with each report)."""
        with self._restarts_lock:
            out, self._restarts = self._restarts, {}
        return out

    def backoff_s(self, runs: int) -> float:
        """Seconds before the retry after ``runs`` failed runs (doubling, capped)."""
        s = self.cfg.scale
        return float(min(s.backoff_initial_s * 2 ** max(runs - 1, 0), s.backoff_max_s))

    # ------------------------------------------------------------------ run
    def _instances(self, message: dict[str, Any], in_dir: Path) -> list[Path]:
        s = self.cfg.scale
        if s.data_access == "shared":
            assert s.shared_spool_dir is not None
            return shared_paths(s.shared_spool_dir, list(message["instances"]))
        return self.client.fetch_study(str(message["study_uid"]), in_dir)

    def _run_warm(self, spec: dict[str, Any], out_dir: Path) -> tuple[dict[str, Any], float]:
        """Run one spec in a free warm child; returns the child's answer and the seconds it took."""
        worker = self._free.get()
        try:
            if not worker.alive():
                how = worker.how_it_ended() if worker.proc is not None else "not started"
                log.warning("worker %s: warm process ended while idle (%s); restarting it", self.name, how)
                worker.kill()
                worker.start()
                self._restarted("crash")
            t0 = time.monotonic()
            answer = worker.wait_answer(spec["job_id"], self.cfg.workers.timeout_s, self.stop) \
                if worker.send(spec) else None
            seconds = time.monotonic() - t0
            if answer is not None and answer.how == "done":
                worker.jobs += 1
                w = self.cfg.workers
                rss = memory_mb(worker.pid) if worker.pid is not None else 0.0
                if worker.jobs >= w.max_jobs_per_worker or (w.max_rss_mb and rss > w.max_rss_mb):
                    # between jobs, as the local pool does (workers.max_jobs_per_worker, workers.max_rss_mb)
                    log.info("worker %s: replacing its warm process after %d job(s), %.0f MiB", self.name,
                             worker.jobs, rss)
                    reason = "recycle_jobs" if worker.jobs >= w.max_jobs_per_worker else "recycle_rss"
                    worker.close()
                    worker.start()  # (resets worker.jobs)
                    self._restarted(reason)
                return answer.message, seconds
            if answer is not None and answer.how == "stopped":
                worker.kill()
                raise _InterruptedError("the worker is shutting down")
            how = ("timeout" if answer is not None and answer.how == "timeout"
                   else worker.how_it_ended() if worker.proc is not None else "crash")
            worker.kill()
            worker.start()
            self._restarted("timeout" if how == "timeout" else "crash")
            if how == "timeout":
                raise _RunFailedError(f"the pipelines took longer than workers.timeout_s={self.cfg.workers.timeout_s:g} s "
                                 "and were stopped")
            raise _RunFailedError(f"pipeline process failed ({how}): {_tail(out_dir / 'worker.log')}")
        finally:
            self._free.put(worker)

    def run(self, task_id: str, delivery: int, message: dict[str, Any]) -> dict[str, Any]:
        """Run one delivery of a task: fetch, run, upload; returns the result sent to the node.

        Raises
        ------
        _RunFailedError
            When the pipelines failed (the caller reports and retries).
        NodeUnreachableError
            When the node cannot be reached (the caller retries).
        """
        job_dir = self.work_dir / f"task-{task_id}.{delivery}"
        shutil.rmtree(job_dir, ignore_errors=True)
        in_dir, out_dir = job_dir / "in", job_dir / "out"
        out_dir.mkdir(parents=True)
        try:
            t0 = time.monotonic()
            paths = self._instances(message, in_dir)
            fetch_s = time.monotonic() - t0
            log.info("job %s: %d instance(s) %s in %.2f s", message["job_id"], len(paths),
                     "read from the shared spool" if self.cfg.scale.data_access == "shared"
                     else "fetched over WADO-RS", fetch_s)
            spec = {"job_id": int(message["job_id"]), "study_uid": message["study_uid"],
                    "instance_paths": [str(p) for p in paths], "out_dir": str(out_dir),
                    "device": self.processes[0].job_device, "pipelines": message["pipelines"]}
            answer, seconds = self._run_warm(spec, out_dir)
            result_file = out_dir / "result.json"
            if not answer.get("ok") or not result_file.exists():
                raise _RunFailedError(f"pipeline process failed: {_tail(out_dir / 'worker.log')}")
            result = json.loads(result_file.read_text())
            run_done_at = time.time()
            outputs = [str(Path(o).resolve().relative_to(out_dir.resolve())) for o in result["outputs"]]
            t1 = time.monotonic()
            if not self.client.upload(task_id, delivery, out_dir, outputs):
                log.info("job %s: results not needed any more (the job was sent again or processed)",
                         message["job_id"])
                return {"job_id": message["job_id"], "state": "superseded"}
            durations = {**_durations(seconds, result), "fetch_s": round(fetch_s, 3),
                         "upload_s": round(time.monotonic() - t1, 3)}
            body = {"worker": self.name, "outputs": outputs, "summary": result["summary"], "durations": durations,
                    "loads": answer.get("loads") or [], "run_done_at": run_done_at,
                    "restarts": self.take_restarts()}
            status, _ = self.client.result(task_id, delivery, body)
            log.info("job %s (study %s): %d output(s) in %.1f s (fetch %.2f s) %s", message["job_id"],
                     uid_tag(str(message["study_uid"])), len(outputs), seconds, fetch_s,
                     "accepted" if status == 200 else "not needed any more (another run's came first)")
            return {"job_id": message["job_id"], "state": "processed" if status == 200 else "superseded"}
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)


class _InterruptedError(RuntimeError):
    """The worker is shutting down mid-job: the message goes back to the broker."""


def default_worker_name(device: str) -> str:
    """``<device>-<pid>@<host>``: unique per process, readable in ``mrinode jobs``."""
    return f"{device.replace(':', '')}-{os.getpid()}@{socket.gethostname()}"


def register_task(app: Celery, runtime: WorkerRuntime) -> None:
    """Register the job task (:data:`~dicom_node.scale.app.TASK_NAME`) on ``app``, bound to ``runtime``."""
    from celery.exceptions import Reject

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
    def run_job(self: Any, **message: Any) -> dict[str, Any]:
        task_id = str(self.request.id)
        client = runtime.client
        shown = repr({"job_id": message.get("job_id")})  # what events and Flower show of a retry (no UID)
        try:
            status, answer = client.start(task_id, runtime.name)
        except NodeUnreachableError as exc:
            # Not started: back to the broker after a pause (not a run of the job).
            log.warning("task %s: %s; retried", task_id[:8], exc)
            raise self.retry(countdown=runtime.backoff_s(1), exc=exc, kwargsrepr=shown) from None
        if status == 409:
            log.info("task %s dropped: %s", task_id[:8], answer.get("reason"))
            return {"job_id": message.get("job_id"), "state": "dropped"}
        if status == 410:
            log.warning("task %s dead-lettered: %s", task_id[:8], answer.get("reason"))
            raise Reject(str(answer.get("reason")), requeue=False)
        delivery = int(answer["delivery"])
        try:
            return runtime.run(task_id, delivery, message)
        except _InterruptedError:
            raise Reject("the worker is shutting down", requeue=True) from None
        except (_RunFailedError, NodeUnreachableError, OSError, ValueError, KeyError) as exc:
            error = str(exc) or type(exc).__name__
        final = delivery >= runtime.cfg.scale.max_attempts
        try:
            client.failed(task_id, error, final, runtime.take_restarts())
        except NodeUnreachableError as exc:
            log.warning("task %s: could not report the failure (%s)", task_id[:8], exc)
        if final:
            raise Reject(error, requeue=False)
        delay = runtime.backoff_s(delivery)
        log.warning("job %s: run %d failed (%s); retried in %.0f s", message.get("job_id"), delivery, error, delay)
        raise self.retry(countdown=delay, exc=_RunFailedError(error), kwargsrepr=shown)
