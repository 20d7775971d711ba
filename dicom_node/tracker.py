"""The study tracker: decides when a study is complete and queues its job.

A study is complete on :meth:`Tracker.complete` (``POST /studies/{uid}/complete``) or
when no instance has arrived for ``tracker.stable_after_s`` seconds. An instance that
arrives after completion re-opens the study (see :meth:`dicom_node.store.Store.add_instance`);
its next completion queues a new job unless one is still waiting in ``queued``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import TYPE_CHECKING

from dicom_node.logs import uid_tag
from dicom_node.queue import JobQueue

if TYPE_CHECKING:
    from dicom_node.audit import AuditLog
    from dicom_node.config import NodeConfig
    from dicom_node.metrics import NodeMetrics
    from dicom_node.store import Store

__all__ = ["Tracker"]

log = logging.getLogger(__name__)


class Tracker:
    """Study completion.

    Parameters
    ----------
    cfg : NodeConfig
        The configuration (``[tracker]``).
    store : Store
        The store database.
    metrics : NodeMetrics
        Counts completions.
    audit : AuditLog
        Receives ``study_complete`` events.
    """

    def __init__(self, cfg: NodeConfig, store: Store, metrics: NodeMetrics, audit: AuditLog) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics
        self.audit = audit
        self.wake = threading.Event()

    def complete(self, study_uid: str, how: str = "api") -> int | None:
        """Mark a study complete and queue its job.

        Parameters
        ----------
        study_uid : str
            The Study Instance UID.
        how : str
            ``"api"`` or ``"stable"`` (for metrics and the audit log).

        Returns
        -------
        int or None
            The queued job's id; ``None`` when the study was already complete (nothing
            new arrived) or a queued job already covers it.

        Raises
        ------
        KeyError
            If the node has no instance of this study.
        """
        now = time.time()
        with self.store.transaction() as c:
            row = c.execute("SELECT state, calling_ae FROM studies WHERE study_uid=?", (study_uid,)).fetchone()
            if row is None:
                raise KeyError(f"study {uid_tag(study_uid)} has no instance on this node")
            if row["state"] == "complete":
                return None
            c.execute("UPDATE studies SET state='complete', completed_at=? WHERE study_uid=?", (now, study_uid))
            job_id = JobQueue.enqueue_in(c, study_uid, row["calling_ae"], now)
            n = c.execute("SELECT COUNT(*) FROM instances WHERE study_uid=?", (study_uid,)).fetchone()[0]
        self.metrics.studies_completed.labels(how=how).inc()
        self.audit.record("study_complete", study=uid_tag(study_uid), how=how, instances=int(n),
                          calling_ae=row["calling_ae"], job=job_id)
        log.info("study %s complete (%s, %d instances): job %s", uid_tag(study_uid), how, n, job_id)
        return job_id

    def poll_once(self, now: float | None = None) -> list[int]:
        """Complete every open study that has been stable long enough.

        Returns
        -------
        list of int
            The ids of the jobs queued.
        """
        now = time.time() if now is None else now
        jobs = []
        for uid in self.store.stable_open_studies(now - self.cfg.tracker.stable_after_s):
            job = self.complete(uid, how="stable")
            if job is not None:
                jobs.append(job)
        return jobs

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set (the tracker thread's body)."""
        last_warned = 0.0
        while not stop.is_set():
            try:
                self.poll_once()
            except sqlite3.OperationalError as exc:  # a full disk or a locked database: said once a minute
                if time.monotonic() - last_warned >= 60.0:
                    last_warned = time.monotonic()
                    log.warning("tracker poll could not use the store database (%s); retrying", exc)
            except Exception:  # keep the thread alive: a failed poll is logged and retried next round
                log.exception("tracker poll failed")
            stop.wait(self.cfg.tracker.poll_interval_s)
