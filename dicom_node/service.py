"""The node service: SCP, tracker, workers, exporter and REST API in one process.

:class:`NodeService` wires the parts together from one :class:`~dicom_node.config.NodeConfig`.
:meth:`NodeService.serve_forever` is what ``mrinode serve`` runs: on SIGTERM or SIGINT
it stops accepting associations, lets C-STOREs in flight finish, interrupts running
pipeline processes (their jobs go back to ``queued``) and leaves queued jobs for the
next start.

The node starts with a full disk: it gives back its space reserve (a 2 MiB file kept in
the data folder while there is room, :class:`~dicom_node.diskspace.SpaceReserve`) so
that SQLite can open the database; recovery and re-queueing that cannot write the store
log a warning and go on; the SCP answers C-ECHO, and C-STORE with ``0xA700`` while the
spool's free space is below ``dicom.min_free_mb``; ``/health`` says ``degraded`` and why
(:meth:`NodeService.health`), ``/metrics`` has ``mrinode_disk_low`` and
``mrinode_spool_free_bytes``.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from typing import Any

from dicom_node.audit import AuditLog
from dicom_node.config import NodeConfig
from dicom_node.diskspace import SpaceReserve
from dicom_node.export import Exporter
from dicom_node.metrics import NodeMetrics, retrain_records
from dicom_node.queue import JobQueue
from dicom_node.scp import StoreSCP
from dicom_node.spool import Spool
from dicom_node.store import Store
from dicom_node.tracker import Tracker
from dicom_node.worker import WorkerPool

__all__ = ["NodeService", "check_pipelines_exist"]

log = logging.getLogger(__name__)


def check_pipelines_exist(cfg: NodeConfig) -> None:
    """Check that every enabled pipeline's module can be found (without importing it) and its model bundle is valid.

    The receive process must not import pipeline modules (they bring torch); finding the
    module is enough to stop a typo at start-up rather than at the first study.

    Raises
    ------
    ConfigError
        Naming the pipeline and its ``function`` reference.
    """
    import importlib.util

    from dicom_node.config import ConfigError

    for i, p in enumerate(cfg.pipelines):
        if not p.enabled:
            continue
        module = p.function.partition(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(f"config key 'pipelines[{i}] ({p.name}).function': module {module!r} of "
                              f"{p.function!r} cannot be found; fix the reference or set enabled = false.")
        model = p.options.get("model")
        if model:
            # Reads the bundle's JSON files only (no torch, MONAI or numpy in the receive process).
            from models.bundle import BundleError
            from models.registry import check_bundle

            search = [p.options["models_dir"]] if p.options.get("models_dir") else None
            try:
                check_bundle(str(model), search)
            except BundleError as exc:
                raise ConfigError(f"config key 'pipelines[{i}] ({p.name}).options.model': {exc}") from None


class NodeService:
    """Everything ``mrinode serve`` runs.

    Parameters
    ----------
    cfg : NodeConfig
        The validated configuration.
    """

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        check_pipelines_exist(cfg)
        cfg.node.data_dir.mkdir(parents=True, exist_ok=True)
        self.reserve = SpaceReserve(cfg.node.data_dir / ".space-reserve")
        self.reserve.release_if_full()  # so that SQLite can open the database on a full disk
        self.store = Store(cfg.db_path)
        self.queue = JobQueue(self.store, require_approval=cfg.export.require_approval)
        self.metrics = NodeMetrics(job_counts=self.queue.counts, retrain_records=lambda: retrain_records(cfg.pipelines))
        self.audit = AuditLog(cfg.audit_log_path)
        self.queue.listeners.append(self.audit.job_event)  # every failure, retry and review in the audit log
        from dicom_node.notify import Notifier

        console = f"http://{cfg.api.host}:{cfg.api.port}/console" if cfg.api.enabled and cfg.console.enabled else None
        self.notifier = Notifier(cfg.notifications, self.audit, node=cfg.node.ae_title, console_url=console)
        self.queue.listeners.append(self.notifier.job_event)
        self.spool = Spool(cfg.spool_dir, fsync=cfg.dicom.spool_fsync, min_free_mb=cfg.dicom.min_free_mb)
        space = self.spool.space
        space.on_recovered = self.reserve.ensure
        if not space.low():
            self.reserve.ensure()
        self.metrics.disk_low.set_function(lambda: float(space.low()))
        self.metrics.spool_free_bytes.set_function(lambda: float(space.free_bytes()))
        self.tracker = Tracker(cfg, self.store, self.metrics, self.audit)
        if cfg.scale.engine == "celery":  # issue 17: jobs run on Celery workers; the job table stays here
            from dicom_node.scale.dispatcher import CeleryDispatcher

            self.workers: WorkerPool | CeleryDispatcher = CeleryDispatcher(cfg, self.store, self.queue, self.metrics)
        else:
            self.workers = WorkerPool(cfg, self.store, self.queue, self.metrics)
        self.exporter = Exporter(cfg, self.queue, self.metrics, self.audit)
        if isinstance(self.workers, WorkerPool):
            self.workers.on_processed = self.exporter.wake.set  # results go out at once, not at the next idle poll
        self.scp = StoreSCP(cfg, self.store, self.spool, self.metrics, self.audit)
        self.metrics.associations_active.set_function(lambda: float(self.scp.associated))
        self.metrics.connections_pending.set_function(lambda: float(self.scp.pending))
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._api_server: Any = None
        self.started_at = time.time()

    def complete_study(self, study_uid: str) -> int | None:
        """Complete a study now (REST); wakes the workers. See :meth:`Tracker.complete`."""
        job = self.tracker.complete(study_uid, how="api")
        self.workers.wake.set()
        return job

    def retry_job(self, job_id: int, rerun: bool = False) -> Any:
        """Re-send or re-run a job (REST); wakes the workers and the exporter."""
        job = self.queue.retry(job_id, rerun=rerun)
        self.workers.wake.set()
        self.exporter.wake.set()
        return job

    def review_job(self, job_id: int, by: str, approve: bool, reason: str = "") -> Any:
        """Approve (results go out) or reject a job held for review; wakes the exporter."""
        job = self.queue.approve(job_id, by) if approve else self.queue.reject(job_id, by, reason)
        self.exporter.wake.set()
        return job

    def health(self) -> dict[str, Any]:
        """The node's state for ``GET /health``: ``ok``, or ``degraded`` with the reasons.

        Returns
        -------
        dict
            ``status`` (``"ok"`` or ``"degraded"``), ``reasons`` (list of str),
            ``disk_low`` (bool) and ``spool_free_bytes`` (int, -1 if unknown).
        """
        space = self.spool.space
        space.on_recovered = self.reserve.ensure
        if not space.low():
            self.reserve.ensure()
        low, free = space.low(), space.free_bytes()
        reasons = []
        if low:
            reasons.append(f"disk_low: {max(free, 0) >> 20} MiB free on the spool's file system, below "
                           f"dicom.min_free_mb = {self.cfg.dicom.min_free_mb}; new instances get 0xA700")
        return {"status": "degraded" if reasons else "ok", "reasons": reasons, "disk_low": low,
                "spool_free_bytes": free}

    def _thread(self, name: str, target: Any) -> None:
        t = threading.Thread(target=target, args=(self.stop_event,), name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def start(self) -> None:
        """Resume unfinished jobs, then start the SCP, the background threads and the API.

        Raises
        ------
        OSError
            If the DICOM or HTTP port cannot be bound.
        """
        from dicom_node.recovery import reindex_unindexed

        removed = self.spool.remove_stale_temporaries()
        if self.spool.space.low():
            log.warning("starting with the spool's file system (nearly) full: degraded until space is freed")
        reindexed = reindex_unindexed(self.store, self.spool)
        try:
            resumed = self.queue.requeue_running()
            log.info("store %s: %d instances (%d re-indexed); jobs %s; %d interrupted job(s) re-queued; "
                     "%d temporary file(s) removed", self.cfg.db_path, self.store.count_instances(), reindexed,
                     self.queue.counts(), resumed, removed)
        except sqlite3.Error as exc:  # a full disk: serve anyway (echo, 0xA700, /health), retry next start
            log.warning("cannot re-queue interrupted jobs now (%s); they are re-queued at the next start", exc)
        self.scp.start()
        self._thread("tracker", self.tracker.run)
        for i in range(self.workers.size):  # one thread per warm worker process
            self._thread(f"worker-{i}", self.workers.run)
        self._thread("exporter", self.exporter.run)
        if self.notifier.enabled:
            self._thread("notifier", self.notifier.run)
        if self.cfg.api.enabled:
            self._start_api()

    def _start_api(self) -> None:
        import uvicorn

        if self.cfg.api.resolve_token() is None and self.cfg.api.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("the REST API listens on %s without a token: set api.token or api.token_file",
                        self.cfg.api.host)
        from dicom_node.api import create_app

        app = create_app(self)
        config = uvicorn.Config(app, host=self.cfg.api.host, port=self.cfg.api.port, log_level="warning",
                                access_log=False, lifespan="off", log_config=None)
        server = uvicorn.Server(config)
        t = threading.Thread(target=server.run, name="api", daemon=True)
        t.start()
        deadline = time.monotonic() + 20
        while not server.started and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            raise OSError(f"the REST API could not listen on {self.cfg.api.host}:{self.cfg.api.port} "
                          "(is the port in use? see the log above)")
        self._api_server = server
        log.info("REST API on http://%s:%d", self.cfg.api.host, self.cfg.api.port)

    def stop(self) -> None:
        """Stop everything (idempotent); queued jobs stay queued for the next start."""
        if self.stop_event.is_set():
            return
        log.info("stopping: finishing C-STOREs in flight")
        self.scp.stop()
        self.stop_event.set()
        self.workers.wake.set()
        self.exporter.wake.set()
        self.notifier.wake()
        for t in self._threads:
            t.join(timeout=30)
        self.workers.kill_all()
        if self._api_server is not None:
            self._api_server.should_exit = True
        self.store.close()
        log.info("stopped")

    def serve_forever(self) -> None:
        """Start, then block until SIGTERM or SIGINT, then stop."""
        done = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            log.info("received %s", signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            self.start()
            while not done.wait(1.0):
                pass
        finally:
            self.stop()
