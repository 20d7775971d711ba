"""The durable job queue, in the store database.

States: ``queued → running → exporting → done | failed``; with review before export
(``[export] require_approval = true``) ``running → awaiting_review → exporting`` when an
operator approves, or ``→ rejected``. A job is one run of every enabled pipeline on one
completed study, then the export of its results. Attempts, the last error and timestamps
are kept; a restart turns ``running`` jobs back into ``queued`` (the interrupted run is not
counted against the job) and resumes ``exporting`` ones.

Every transition worth telling (a failed run or export attempt and whether it is retried,
``done``, ``failed``, ``awaiting_review``, an approval, a rejection, a retry) is passed to
the :attr:`JobQueue.listeners` (the audit log and the notifications subscribe).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_node.store import Store

__all__ = ["JOB_STATES", "Job", "JobListener", "JobQueue"]

log = logging.getLogger(__name__)

JOB_STATES: tuple[str, ...] = ("queued", "running", "exporting", "done", "failed", "awaiting_review", "rejected")

#: Called as ``listener(event, job, facts)`` after a transition: ``event`` is one of ``run_failed``,
#: ``export_failed``, ``done``, ``failed``, ``awaiting_review``, ``approved``, ``rejected``, ``retried``.
JobListener = Callable[[str, "Job", dict[str, Any]], None]


@dataclass
class Job:
    """One job row."""

    id: int
    study_uid: str
    calling_ae: str
    state: str
    attempts: int
    export_attempts: int
    last_error: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    next_attempt_at: float
    result_dir: str | None
    outputs: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    #: Which worker ran it (``[scale] engine = "celery"``: the Celery worker's name), when known.
    worker: str | None = None

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> Job:
        """Build from a ``jobs`` row."""
        return cls(
            id=r["id"], study_uid=r["study_uid"], calling_ae=r["calling_ae"], state=r["state"],
            attempts=r["attempts"], export_attempts=r["export_attempts"], last_error=r["last_error"],
            created_at=r["created_at"], updated_at=r["updated_at"], started_at=r["started_at"],
            finished_at=r["finished_at"], next_attempt_at=r["next_attempt_at"], result_dir=r["result_dir"],
            outputs=json.loads(r["outputs"]), summary=json.loads(r["summary"]), durations=json.loads(r["durations"]),
            worker=r["worker"] if "worker" in r.keys() else None,  # noqa: SIM118 (a Row's `in` looks at values)
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view (for the REST API and ``mrinode jobs``)."""
        return dict(self.__dict__)


class JobQueue:
    """Job operations on the store database.

    Parameters
    ----------
    store : Store
        The store database.
    """

    def __init__(self, store: Store, *, require_approval: bool = False) -> None:
        self.store = store
        #: Hold processed results in ``awaiting_review`` until :meth:`approve` (``export.require_approval``).
        self.require_approval = require_approval
        #: Told of every transition (see the module docstring).
        self.listeners: list[JobListener] = []

    def _emit(self, event: str, job_id: int, **facts: Any) -> None:
        if not self.listeners:
            return
        job = self.get(job_id)
        if job is None:
            return
        for listener in list(self.listeners):
            try:
                listener(event, job, facts)
            except Exception:  # a listener (audit, webhook queue) must never undo a transition
                log.exception("job %d: listener of %r failed", job_id, event)

    # ----------------------------------------------------------------- create
    @staticmethod
    def enqueue_in(c: sqlite3.Connection, study_uid: str, calling_ae: str, now: float) -> int | None:
        """Queue a job for a study inside an open transaction, unless one is already queued.

        Returns
        -------
        int or None
            The new job id, or ``None`` when a queued job for the study exists (it will
            see the new instances, as it reads the instance list when it starts).
        """
        if c.execute("SELECT 1 FROM jobs WHERE study_uid=? AND state='queued'", (study_uid,)).fetchone():
            return None
        cur = c.execute(
            "INSERT INTO jobs(study_uid, calling_ae, state, created_at, updated_at) VALUES (?,?,?,?,?)",
            (study_uid, calling_ae, "queued", now, now),
        )
        return int(cur.lastrowid or 0)

    # ------------------------------------------------------------------ read
    def get(self, job_id: int) -> Job | None:
        """One job, or ``None``."""
        r = self.store.conn().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return Job.from_row(r) if r else None

    def list_jobs(self, state: str | None = None, study_uid: str | None = None, limit: int = 200) -> list[Job]:
        """Jobs, newest first, optionally filtered by state and study."""
        where, args = [], []
        if state:
            where.append("state=?")
            args.append(state)
        if study_uid:
            where.append("study_uid=?")
            args.append(study_uid)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        rows = self.store.conn().execute(sql, (*args, limit)).fetchall()
        return [Job.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of jobs in every state."""
        rows = self.store.conn().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        out = dict.fromkeys(JOB_STATES, 0)
        out.update({r["state"]: r["n"] for r in rows})
        return out

    # ------------------------------------------------------------ transitions
    def claim_next(self, now: float | None = None) -> Job | None:
        """Move the oldest due ``queued`` job to ``running`` and return it."""
        now = time.time() if now is None else now
        with self.store.transaction() as c:
            r = c.execute(
                "SELECT id FROM jobs WHERE state='queued' AND next_attempt_at<=? ORDER BY id LIMIT 1", (now,)
            ).fetchone()
            if r is None:
                return None
            c.execute(
                "UPDATE jobs SET state='running', attempts=attempts+1, started_at=?, updated_at=? WHERE id=?",
                (now, now, r["id"]),
            )
        return self.get(int(r["id"]))

    def claim_export(self, now: float | None = None) -> Job | None:
        """Return the oldest ``exporting`` job whose next attempt is due (stays ``exporting``)."""
        now = time.time() if now is None else now
        with self.store.transaction() as c:
            r = c.execute(
                "SELECT id FROM jobs WHERE state='exporting' AND next_attempt_at<=? ORDER BY next_attempt_at, id LIMIT 1",
                (now,),
            ).fetchone()
            if r is None:
                return None
            # Park it while this exporter works on it, so a second exporter does not take it.
            c.execute("UPDATE jobs SET next_attempt_at=? WHERE id=?", (now + 3600.0, r["id"]))
        return self.get(int(r["id"]))

    def _update(self, job_id: int, **values: Any) -> None:
        values["updated_at"] = time.time()
        cols = ", ".join(f"{k}=?" for k in values)
        with self.store.transaction() as c:
            c.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*values.values(), job_id))

    def set_processed(self, job_id: int, result_dir: Path, outputs: list[Path], summary: dict[str, Any],
                      durations: dict[str, float]) -> None:
        """The pipelines ran: record results and move to ``exporting`` (``awaiting_review`` when held)."""
        hold = self.require_approval and bool(outputs)
        self._update(
            job_id, state="awaiting_review" if hold else "exporting", result_dir=str(result_dir),
            outputs=json.dumps([str(p) for p in outputs]), summary=json.dumps(summary, default=str),
            durations=json.dumps(durations), next_attempt_at=0.0, export_attempts=0, last_error=None,
        )
        if hold:
            self._emit("awaiting_review", job_id, outputs=len(outputs))

    def set_run_failed(self, job_id: int, error: str, retry: bool, delay_s: float = 0.0) -> None:
        """A pipeline run failed: back to ``queued`` (``retry``) or ``failed``."""
        if retry:
            self._update(job_id, state="queued", last_error=error, next_attempt_at=time.time() + delay_s)
        else:
            self._update(job_id, state="failed", last_error=error, finished_at=time.time(), next_attempt_at=0.0)
        self._emit("run_failed", job_id, error=error, retried=retry)
        if not retry:
            self._emit("failed", job_id, error=error, stage="pipeline")

    def set_export_failed(self, job_id: int, error: str, next_attempt_at: float | None) -> None:
        """An export attempt failed: retry at ``next_attempt_at``, or ``failed`` when ``None``."""
        job = self.get(job_id)
        attempts = (job.export_attempts if job else 0) + 1
        if next_attempt_at is None:
            self._update(job_id, state="failed", last_error=error, export_attempts=attempts, finished_at=time.time(),
                         next_attempt_at=0.0)
        else:
            self._update(job_id, last_error=error, export_attempts=attempts, next_attempt_at=next_attempt_at)
        self._emit("export_failed", job_id, error=error, attempt=attempts, retried=next_attempt_at is not None,
                   next_attempt_at=next_attempt_at)
        if next_attempt_at is None:
            self._emit("failed", job_id, error=error, stage="export")

    def set_done(self, job_id: int, durations: dict[str, float] | None = None) -> None:
        """Every result was delivered."""
        extra: dict[str, Any] = {}
        if durations is not None:
            extra["durations"] = json.dumps(durations)
        job = self.get(job_id)
        attempts = (job.export_attempts if job else 0) + 1
        self._update(job_id, state="done", finished_at=time.time(), export_attempts=attempts, last_error=None,
                     next_attempt_at=0.0, **extra)  # nothing is due any more (the exporter parked it an hour ahead)
        self._emit("done", job_id, outputs=len(job.outputs) if job else 0)

    def approve(self, job_id: int, by: str) -> Job:
        """An operator approved a held job's results: ``awaiting_review → exporting``.

        Parameters
        ----------
        job_id : int
            The job.
        by : str
            Who approved (recorded in the audit log with the time).

        Raises
        ------
        KeyError
            If there is no such job.
        ValueError
            If the job is not ``awaiting_review``.
        """
        return self._review(job_id, by, "approved", "exporting", "")

    def reject(self, job_id: int, by: str, reason: str = "") -> Job:
        """An operator rejected a held job's results: ``awaiting_review → rejected`` (nothing is sent).

        Raises
        ------
        KeyError
            If there is no such job.
        ValueError
            If the job is not ``awaiting_review``.
        """
        return self._review(job_id, by, "rejected", "rejected", reason)

    def _review(self, job_id: int, by: str, event: str, state: str, reason: str) -> Job:
        now = time.time()
        with self.store.transaction() as c:
            n = c.execute(
                "UPDATE jobs SET state=?, next_attempt_at=0, updated_at=?, finished_at=?, last_error=? "
                "WHERE id=? AND state='awaiting_review'",
                (state, now, now if state == "rejected" else None,
                 f"rejected by {by}" + (f": {reason}" if reason else "") if state == "rejected" else None, job_id),
            ).rowcount
        job = self.get(job_id)
        if job is None:
            raise KeyError(f"there is no job {job_id}")
        if not n:
            raise ValueError(f"job {job_id} is {job.state}, not awaiting_review")
        self._emit(event, job_id, by=by, reason=reason)
        return job

    def requeue_job(self, job_id: int) -> None:
        """Put an interrupted ``running`` job back to ``queued`` without counting the run."""
        with self.store.transaction() as c:
            c.execute(
                "UPDATE jobs SET state='queued', attempts=MAX(attempts-1, 0), next_attempt_at=0, updated_at=? "
                "WHERE id=? AND state='running'",
                (time.time(), job_id),
            )

    def requeue_running(self) -> int:
        """On start-up: ``running`` jobs (interrupted) go back to ``queued``; park-times reset.

        Returns
        -------
        int
            How many jobs were re-queued.
        """
        now = time.time()
        with self.store.transaction() as c:
            n = c.execute(
                "UPDATE jobs SET state='queued', attempts=MAX(attempts-1, 0), next_attempt_at=0, updated_at=? "
                "WHERE state='running'",
                (now,),
            ).rowcount
            c.execute("UPDATE jobs SET next_attempt_at=0 WHERE state='exporting' AND next_attempt_at>?", (now,))
        return int(n)

    def retry(self, job_id: int, rerun: bool = False) -> Job:
        """Re-send a job's results, or re-run it.

        A job whose results are on disk is re-sent (``exporting``, export attempts reset);
        otherwise, or with ``rerun``, it is re-run (``queued``, attempts reset).

        Raises
        ------
        KeyError
            If there is no such job.
        ValueError
            If the job is ``running`` (wait for it).
        """
        job = self.get(job_id)
        if job is None:
            raise KeyError(f"there is no job {job_id}")
        if job.state == "running":
            raise ValueError(f"job {job_id} is running; retry it when it has finished")
        has_results = bool(job.outputs) and all(Path(p).exists() for p in job.outputs)
        if job.state == "awaiting_review" and not rerun:
            raise ValueError(f"job {job_id} is awaiting review; approve or reject it (or re-run it)")
        if has_results and not rerun:
            # Under review before export a re-send is reviewed again.
            self._update(job_id, state="awaiting_review" if self.require_approval else "exporting", export_attempts=0,
                         next_attempt_at=0.0, finished_at=None)
        else:
            self._update(job_id, state="queued", attempts=0, export_attempts=0, next_attempt_at=0.0,
                         finished_at=None, outputs="[]", summary="{}")
        updated = self.get(job_id)
        assert updated is not None
        self._emit("retried", job_id, rerun=updated.state == "queued", previous_state=job.state)
        if updated.state == "awaiting_review":
            self._emit("awaiting_review", job_id, outputs=len(updated.outputs))
        return updated
