"""The append-only audit log: one JSON object per line for every study received and
every object sent. UIDs are written as :func:`dicom_node.logs.uid_tag` tags, never
patient names or IDs."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

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
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields}
        line = (json.dumps(entry, default=str, sort_keys=False) + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """Every event so far (for tests and the REST API)."""
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x.strip()]
