"""The spool's free-space watermark (``[dicom] min_free_mb``), checked cheaply.

:meth:`FreeSpace.low` answers from the last ``statvfs`` of the spool's file system and
takes a new one only when that is older than ``interval_s`` or when more than
``recheck_bytes`` were written since (:meth:`FreeSpace.wrote`), so asking before every
instance costs a clock read. Below the watermark the node answers new instances with
``0xA700`` before it writes anything, and says so in ``/health`` and ``/metrics``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

__all__ = ["FreeSpace"]

log = logging.getLogger(__name__)


class FreeSpace:
    """Free space of a folder's file system against a watermark.

    Parameters
    ----------
    path : Path
        A folder on the file system to watch.
    min_free_bytes : int
        Below this many free bytes (available to unprivileged users) the space is low;
        ``0`` only reports and never says low unless the file system is full.
    interval_s : float
        The longest a ``statvfs`` result is used.
    recheck_bytes : int
        Bytes written since the last ``statvfs`` that force a new one.
    """

    def __init__(self, path: Path, min_free_bytes: int = 0, interval_s: float = 1.0,
                 recheck_bytes: int = 64 << 20) -> None:
        self.path = Path(path)
        self.min_free_bytes = max(int(min_free_bytes), 0)
        self.interval_s = interval_s
        self.recheck_bytes = min(recheck_bytes, max(self.min_free_bytes // 4, 1 << 20))
        self._lock = threading.Lock()
        self._checked_at = -1e18
        self._written = 0
        self._free = -1
        self._low = False

    def _statvfs(self) -> int:
        try:
            st = os.statvfs(self.path)
        except OSError as exc:
            log.warning("cannot read the free space of %s (%s)", self.path, exc.strerror or exc)
            return -1
        return int(st.f_bavail) * int(st.f_frsize)

    def refresh(self, force: bool = False) -> None:
        """Take a new ``statvfs`` if the last one is stale (or ``force``)."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.interval_s and self._written < self.recheck_bytes:
            return
        with self._lock:
            if not force and now - self._checked_at < self.interval_s and self._written < self.recheck_bytes:
                return
            free = self._statvfs()
            self._checked_at, self._written = now, 0
            if free < 0:  # unknown: keep the last verdict
                return
            low = free == 0 or free < self.min_free_bytes
            if low != self._low:
                if low:
                    log.warning("free space on the spool is low: %d MiB free, dicom.min_free_mb is %d; new "
                                "instances get 0xA700 until space is freed", free >> 20, self.min_free_bytes >> 20)
                else:
                    log.warning("free space on the spool is back: %d MiB free; accepting instances again",
                                free >> 20)
            self._free, self._low = free, low

    def low(self) -> bool:
        """Whether the free space is below the watermark (re-checked when stale)."""
        self.refresh()
        return self._low

    def free_bytes(self) -> int:
        """Free bytes at the last check (re-checked when stale); ``-1`` if unknown."""
        self.refresh()
        return self._free

    def wrote(self, n: int) -> None:
        """Count ``n`` bytes written (a large amount makes the next check take a ``statvfs``)."""
        self._written += n
