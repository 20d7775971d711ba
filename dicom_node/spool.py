"""The spool: received instances as Part 10 files, written atomically and durably.

Layout: ``<spool>/<study>/<sop>.dcm`` where ``<study>`` and ``<sop>`` are the UIDs when
they are plain UIDs (digits and dots) and a SHA-256 name otherwise, so no received
value can steer a path. A write goes to a temporary file in the same folder and is
renamed over the final name (a repeated SOP Instance UID replaces the earlier copy;
there are never two). Durability modes (``dicom.spool_fsync``):

``"file+dir"``
    fsync the file, rename, fsync the folder: strict POSIX, two fsyncs per instance.
``"file"`` (default)
    rename, then fsync the still-open file: one fsync per instance. On journaling file
    systems (ext4, XFS) the rename updates the file's inode, so the fsync commits the
    journal transaction that holds the rename together with the data.
``"off"``
    no fsync: a crash of the node loses nothing (the page cache survives it), a power
    loss may lose acknowledged instances.

A failed write leaves no file: neither the temporary nor, when the failure comes after
the rename (the fsync of ``"file"`` mode), the final one. :attr:`Spool.space` watches the
free space against ``dicom.min_free_mb`` (see :mod:`dicom_node.diskspace`).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

from dicom_node.diskspace import FreeSpace

__all__ = ["FSYNC_MODES", "Spool", "safe_name"]

FSYNC_MODES: tuple[str, ...] = ("file+dir", "file", "off")

_UID_RE = re.compile(r"^[0-9][0-9.]{0,63}$")


def safe_name(uid: str) -> str:
    """Return a file-system name for a UID (the UID itself when it is a plain UID)."""
    if _UID_RE.match(uid) and ".." not in uid:
        return uid
    return "h" + hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:40]


class Spool:
    """Atomic, durable instance files.

    Parameters
    ----------
    root : Path
        The spool folder (created if missing).
    fsync : str
        One of :data:`FSYNC_MODES` (see the module docstring).
    min_free_mb : int
        The free-space watermark (``dicom.min_free_mb``) of :attr:`space`; 0: none.
    """

    def __init__(self, root: Path, fsync: str = "file", min_free_mb: int = 0) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"spool fsync mode {fsync!r} is not one of {', '.join(FSYNC_MODES)}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._known_dirs: set[str] = set()
        self._lock = threading.Lock()
        #: The free space of the spool's file system against ``min_free_mb``.
        self.space = FreeSpace(self.root, min_free_mb << 20)

    def path_for(self, study_uid: str, sop_uid: str) -> Path:
        """The final path of an instance."""
        return self.root / safe_name(study_uid) / (safe_name(sop_uid) + ".dcm")

    def _ensure_dir(self, d: Path) -> None:
        key = str(d)
        if key in self._known_dirs:
            return
        d.mkdir(parents=True, exist_ok=True)
        if self.fsync != "off":
            self._fsync_dir(d.parent)
        with self._lock:
            self._known_dirs.add(key)

    @staticmethod
    def _fsync_dir(d: Path) -> None:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, study_uid: str, sop_uid: str, chunks: Sequence[bytes]) -> tuple[Path, int]:
        """Write one instance atomically.

        Parameters
        ----------
        study_uid, sop_uid : str
            Where it goes.
        chunks : sequence of bytes
            The file content in pieces (preamble, file meta, dataset), written in order.

        Returns
        -------
        tuple
            The final path and the number of bytes written.

        Raises
        ------
        OSError
            If the disk is full or the file cannot be written; no file is left (not even
            the final one when the fsync after the rename fails).
        """
        final = self.path_for(study_uid, sop_uid)
        self._ensure_dir(final.parent)
        tmp = final.parent / f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        size = 0
        renamed = False
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                        size += n
                if self.fsync == "file+dir":
                    os.fsync(fd)
                os.replace(tmp, final)
                renamed = True
                if self.fsync == "file":
                    os.fsync(fd)
            finally:
                os.close(fd)
            if self.fsync == "file+dir":
                self._fsync_dir(final.parent)
        except BaseException:
            (final if renamed else tmp).unlink(missing_ok=True)
            raise
        finally:
            self.space.wrote(size)
        return final, size

    def remove(self, path: Path) -> None:
        """Delete an instance file whose instance was not accepted (missing is fine)."""
        Path(path).unlink(missing_ok=True)

    def files_since(self, since: float) -> list[Path]:
        """Instance files written at or after ``since`` (epoch seconds), oldest first.

        Only study folders modified since then are listed, so a large spool costs one
        ``stat`` per study folder.
        """
        found: list[tuple[float, Path]] = []
        with os.scandir(self.root) as studies:
            for d in studies:
                if not d.is_dir(follow_symlinks=False) or d.stat().st_mtime < since:
                    continue
                with os.scandir(d.path) as files:
                    for f in files:
                        if f.name.endswith(".dcm") and not f.name.startswith("."):
                            mtime = f.stat().st_mtime
                            if mtime >= since:
                                found.append((mtime, Path(f.path)))
        return [p for _, p in sorted(found)]

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by a crash (call at start-up). Returns how many."""
        n = 0
        for p in self.root.glob("*/.*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
        return n
