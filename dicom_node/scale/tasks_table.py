"""The node's record of the Celery tasks it sent: one row per task, in the store database.

The job table (:mod:`dicom_node.queue`) stays the source of truth for a job's state; this
table says which task is the job's current one (an older task's message, redelivered after
a restart, is recognised as stale and dropped), how many times its message was delivered,
which worker ran it, and the engine's timestamps (sent, started, run ended on the worker,
result back on the node) that ``bench/scale.py`` reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dicom_node.store import Store

__all__ = ["TaskRow", "TaskTable"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scale_tasks (
    task_id       TEXT PRIMARY KEY,
    job_id        INTEGER NOT NULL,
    queue         TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'sent',
    sent_at       REAL NOT NULL,
    started_at    REAL,
    deliveries    INTEGER NOT NULL DEFAULT 0,
    worker        TEXT,
    run_done_at   REAL,
    result_at     REAL,
    last_error    TEXT
);
CREATE INDEX IF NOT EXISTS scale_tasks_job ON scale_tasks(job_id, sent_at);
"""


@dataclass(frozen=True)
class TaskRow:
    """One task sent for a job.

    ``state``: ``sent``, ``started``, ``result`` (its result was accepted), ``failed``
    (given up), ``dropped`` (lost before it reached the broker).
    """

    task_id: str
    job_id: int
    queue: str
    state: str
    sent_at: float
    started_at: float | None
    deliveries: int
    worker: str | None
    run_done_at: float | None
    result_at: float | None
    last_error: str | None


class TaskTable:
    """Task rows in the store database (created on first use).

    Parameters
    ----------
    store : Store
        The node's store database.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.store.conn().executescript(_SCHEMA)

    def add(self, task_id: str, job_id: int, queue: str, now: float | None = None) -> None:
        """Record a task about to be sent."""
        with self.store.transaction() as c:
            c.execute("INSERT INTO scale_tasks(task_id, job_id, queue, sent_at) VALUES (?,?,?,?)",
                      (task_id, job_id, queue, time.time() if now is None else now))

    def get(self, task_id: str) -> TaskRow | None:
        """One task, or ``None``."""
        r = self.store.conn().execute("SELECT * FROM scale_tasks WHERE task_id=?", (task_id,)).fetchone()
        return TaskRow(**dict(r)) if r is not None else None

    def current(self, job_id: int) -> TaskRow | None:
        """The job's newest task, or ``None``."""
        r = self.store.conn().execute(
            "SELECT * FROM scale_tasks WHERE job_id=? ORDER BY sent_at DESC, rowid DESC LIMIT 1", (job_id,)).fetchone()
        return TaskRow(**dict(r)) if r is not None else None

    def for_job(self, job_id: int) -> list[TaskRow]:
        """Every task of a job, oldest first."""
        rows = self.store.conn().execute("SELECT * FROM scale_tasks WHERE job_id=? ORDER BY sent_at, rowid",
                                         (job_id,)).fetchall()
        return [TaskRow(**dict(r)) for r in rows]

    def started(self, task_id: str, worker: str, now: float | None = None) -> int:
        """A worker starts the task (one more delivery); returns the number of deliveries so far."""
        now = time.time() if now is None else now
        with self.store.transaction() as c:
            c.execute("UPDATE scale_tasks SET deliveries=deliveries+1, worker=?, state='started', "
                      "started_at=COALESCE(started_at, ?) WHERE task_id=?", (worker, now, task_id))
            r = c.execute("SELECT deliveries FROM scale_tasks WHERE task_id=?", (task_id,)).fetchone()
        return int(r["deliveries"]) if r is not None else 0

    def set_state(self, task_id: str, state: str, *, error: str | None = None, run_done_at: float | None = None,
                  result_at: float | None = None) -> None:
        """Move a task to ``state`` (with the error or the result's timestamps)."""
        with self.store.transaction() as c:
            c.execute("UPDATE scale_tasks SET state=?, last_error=COALESCE(?, last_error), "
                      "run_done_at=COALESCE(?, run_done_at), result_at=COALESCE(?, result_at) WHERE task_id=?",
                      (state, error, run_done_at, result_at, task_id))

    def drop(self, task_id: str) -> None:
        """Forget a task that never reached the broker."""
        with self.store.transaction() as c:
            c.execute("DELETE FROM scale_tasks WHERE task_id=?", (task_id,))
