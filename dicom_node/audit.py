"""The append-only audit log: one JSON object per line for every study received, every
object sent and every job transition worth keeping (failed runs and export attempts with
their retries, ``done``, ``failed``, held for review, approved or rejected with who and
when, retried). UIDs are written as :func:`dicom_node.logs.uid_tag` tags, never patient
names or IDs."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicom_node.queue import Job

__all__ = ["AuditLog"]


class AuditLog:
    """Appends JSON lines to a file (opened with ``O_APPEND``; each line one ``write``).

    Parameters
    ----------
    path : Path
        The log file (its folder is created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(self, event: str, **fields: Any) -> None:
        """Append one event.

        Parameters
        ----------
        event : str
            For example ``"study_received"``, ``"study_complete"``, ``"object_sent"``.
        **fields
            JSON-serialisable facts (no patient names or IDs; UIDs as tags).
        """
        now = time.time()  # ISO 8601 UTC with milliseconds: events of one second keep their order
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        entry = {"time": stamp, "event": event, **fields}
        line = (json.dumps(entry, default=str, sort_keys=False) + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def job_event(self, event: str, job: Job, facts: dict[str, Any]) -> None:
        """Record a job transition (a :data:`dicom_node.queue.JobListener`) as ``job_<event>``.

        Parameters
        ----------
        event : str
            ``run_failed``, ``export_failed``, ``done``, ``failed``, ``awaiting_review``,
            ``approved``, ``rejected`` or ``retried``.
        job : Job
            The job after the transition.
        facts : dict
            What the queue said about it (errors are scrubbed of UIDs and control characters).
        """
        from dicom_node.logs import scrub, uid_tag

        clean = {k: scrub(v) if isinstance(v, str) else v for k, v in facts.items()}
        self.record(f"job_{event}", job=job.id, study=uid_tag(job.study_uid), state=job.state,
                    runs=job.attempts, export_attempts=job.export_attempts, **clean)

    def read(self) -> list[dict[str, Any]]:
        """Every event so far (for tests and the REST API)."""
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x.strip()]
