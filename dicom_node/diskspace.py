"""The spool's free-space watermark (``[dicom] min_free_mb``), checked cheaply.

:meth:`FreeSpace.low` answers from the last ``statvfs`` of the spool's file system and
takes a new one only when that is older than ``interval_s`` or when more than
``recheck_bytes`` were written since (:meth:`FreeSpace.wrote`), so asking before every
instance costs a clock read. Below the watermark the node answers new instances with
``0xA700`` before it writes anything, and says so in ``/health`` and ``/metrics``.
:class:`SpaceReserve` keeps a few MiB aside for the store database to open on a full disk.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["FreeSpace", "SpaceReserve"]

log = logging.getLogger(__name__)


class FreeSpace:
    """Free space of a folder's file system against a watermark.

    Parameters
    ----------
    path : Path
        A folder on the file system to watch.
    min_free_bytes : int
        Below this many free bytes (available to unprivileged users) the space is low;
        ``0``: never low, only reported (some file systems report no free space at all;
        a write that fails for want of space still gets ``0xA700``).
    interval_s : float
        The longest a ``statvfs`` result is used.
    recheck_bytes : int
        Bytes written since the last ``statvfs`` that force a new one.
    """

    #: Called when the space comes back above the watermark (the node re-creates its
    #: :class:`SpaceReserve` there); its exceptions are logged.
    on_recovered: Callable[[], object] | None = None

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
            low = free < self.min_free_bytes
            if low != self._low:
                if low:
                    log.warning("free space on the spool is low: %d MiB free, dicom.min_free_mb is %d; new "
                                "instances get 0xA700 until space is freed", free >> 20, self.min_free_bytes >> 20)
                else:
                    log.warning("free space on the spool is back: %d MiB free; accepting instances again",
                                free >> 20)
            recovered = self._low and not low
            self._free, self._low = free, low
        if recovered and self.on_recovered is not None:
            try:
                self.on_recovered()
            except Exception:  # a callback must not fail the C-STORE that asked
                log.exception("free-space recovery callback failed")

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


class SpaceReserve:
    """A file of reserved space next to the store database, given back when the disk is full.

    SQLite cannot even open a WAL database on a file system with no free block (it must
    create the 32 KiB ``-shm`` index), so a node stopped cleanly could not start again on a
    full disk. The node keeps this file while there is room (:meth:`ensure`) and deletes it
    at start-up when the disk is full (:meth:`release`): the database opens, and start-up
    recovery and job bookkeeping have some room to write.

    Parameters
    ----------
    path : Path
        The reserve file.
    size : int
        Its size in bytes.
    """

    def __init__(self, path: Path, size: int = 2 << 20) -> None:
        self.path = Path(path)
        self.size = size

    def ensure(self) -> bool:
        """Create the reserve if it is missing and the disk has room for it twice; return whether it exists."""
        if self.path.exists():
            return True
        try:
            st = os.statvfs(self.path.parent)
            if st.f_bavail * st.f_frsize < 2 * self.size:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
        except FileExistsError:
            return True
        except OSError as exc:
            log.warning("cannot create the space reserve %s (%s)", self.path.name, exc.strerror or exc)
            self.path.unlink(missing_ok=True)
            return False
        return True

    def release(self) -> bool:
        """Delete the reserve; return whether there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("the disk is full: released the %d MiB space reserve %s so the node can start",
                    self.size >> 20, self.path.name)
        return True

    def release_if_full(self) -> bool:
        """Release the reserve when less than its size is free; return whether it was released."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < self.size and self.release()
