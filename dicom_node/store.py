"""The store database: one SQLite file (WAL mode) holding instances, studies and jobs.

Connections come from a small pool (:class:`Store`): each query or transaction checks one
out and gives it back, so the number of open connections (two descriptors each, the
database and its WAL) does not grow with the threads that used the store — pynetdicom
serves every association in new threads, and a node lives through millions of them.
Durability: the spool file is fsynced and renamed (and its folder fsynced) before the
instance row is committed, and the commit happens before the C-STORE is answered.
The database runs with ``journal_mode=WAL`` and ``synchronous=NORMAL``: a committed
transaction survives a crash or ``kill -9`` of the node (the WAL is in the OS page
cache and is replayed on the next open); only a power loss or kernel crash can lose
the last transactions; the instance files themselves are already on disk, and
:func:`dicom_node.recovery.reindex_unindexed` indexes them again at the next start.
``synchronous=FULL`` would add an fsync of the WAL to every C-STORE.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["InstanceRecord", "Rows", "Store", "StudyRow"]

#: Connections in use at once (threads beyond wait for one; a thread that already holds one
#: may open another, closed when given back). Kept open once opened: closing a connection
#: while others hold their WAL read locks only parks its descriptor inside SQLite (the unix
#: VFS defers the close until no lock is held), so a pool that opens and closes under load
#: ends with more descriptors than it started with.
POOL_SIZE = 3
#: Seconds a thread waits for a free connection before the statement fails as "busy".
POOL_WAIT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_uid     TEXT PRIMARY KEY,
    study_uid   TEXT NOT NULL,
    series_uid  TEXT NOT NULL,
    sop_class   TEXT NOT NULL,
    modality    TEXT NOT NULL DEFAULT '',
    series_desc TEXT NOT NULL DEFAULT '',
    transfer_syntax TEXT NOT NULL DEFAULT '',
    path        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    calling_ae  TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS studies (
    study_uid    TEXT PRIMARY KEY,
    calling_ae   TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL DEFAULT 'open',
    first_at     REAL NOT NULL,
    last_at      REAL NOT NULL,
    completed_at REAL,
    reopened     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS studies_state ON studies(state, last_at);
CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid       TEXT NOT NULL,
    calling_ae      TEXT NOT NULL DEFAULT '',
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    export_attempts INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    result_dir      TEXT,
    outputs         TEXT NOT NULL DEFAULT '[]',
    summary         TEXT NOT NULL DEFAULT '{}',
    durations       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, next_attempt_at);
CREATE INDEX IF NOT EXISTS jobs_study ON jobs(study_uid);
"""


#: Columns added since the first schema: (table, column, declaration). Each is added to an
#: existing database at open (SQLite's ADD COLUMN keeps the rows; NULL or the default for them).
_ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("jobs", "worker", "TEXT"),  # which worker ran the job (issue 17: Celery workers on other machines)
)


def _migrate(c: sqlite3.Connection) -> None:
    """Add the columns of :data:`_ADDED_COLUMNS` that an older database lacks (idempotent)."""
    for table, column, decl in _ADDED_COLUMNS:
        have = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            try:
                c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            except sqlite3.OperationalError as exc:  # another process added it between the two statements
                if "duplicate column" not in str(exc):
                    raise


@dataclass(frozen=True)
class InstanceRecord:
    """One received instance, as indexed."""

    sop_uid: str
    study_uid: str
    series_uid: str
    sop_class: str
    modality: str
    series_desc: str
    transfer_syntax: str
    path: str
    size: int
    calling_ae: str


@dataclass(frozen=True)
class StudyRow:
    """A study as the tracker sees it."""

    study_uid: str
    calling_ae: str
    state: str
    first_at: float
    last_at: float
    completed_at: float | None
    reopened: int
    n_instances: int


class Rows:
    """The fetched result of one query (a finished cursor: the connection is already given back)."""

    def __init__(self, rows: list[Any], lastrowid: int | None, rowcount: int) -> None:
        self._rows = rows
        self.lastrowid = lastrowid
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        """The first row, or ``None``."""
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        """Every row."""
        return list(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class _Queries:
    """What :meth:`Store.conn` returns: one pooled connection per statement (autocommit)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def execute(self, sql: str, args: Iterable[Any] = ()) -> Rows:
        """Run one statement on a pooled connection and fetch its rows."""
        with self._store.connection() as c:
            cur = c.execute(sql, tuple(args))
            rows = cur.fetchall()
            return Rows(rows, cur.lastrowid, cur.rowcount)

    def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> Rows:
        """Run one statement for each parameter set on a pooled connection."""
        with self._store.connection() as c:
            cur = c.executemany(sql, [tuple(p) for p in seq])
            return Rows([], cur.lastrowid, cur.rowcount)

    def executescript(self, script: str) -> None:
        """Run a script on a pooled connection."""
        with self._store.connection() as c:
            c.executescript(script)


class Store:
    """The SQLite store database (thread-safe: a bounded pool of connections).

    Parameters
    ----------
    path : Path
        The database file (created with its schema if missing).
    pool_size : int
        Connections used at once (see :data:`POOL_SIZE`): open descriptors stay bounded
        whatever the number of threads that ever used the store or use it now.
    """

    def __init__(self, path: Path, pool_size: int = POOL_SIZE) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pool_idle = max(1, pool_size)
        self._slots = threading.BoundedSemaphore(self._pool_idle)
        self._held = threading.local()  # connections this thread holds now (nested use does not wait)
        self._idle: list[tuple[sqlite3.Connection, float]] = []  # (connection, given back at), newest last
        self._lock = threading.Lock()
        self._generation = 0
        self._queries = _Queries(self)
        with self.connection() as c:
            c.execute("PRAGMA journal_mode=WAL")  # kept in the database file
            c.executescript(_SCHEMA)
            _migrate(c)

    def _open(self) -> sqlite3.Connection:
        # timeout=30 is SQLite's busy timeout; WAL mode is a property of the file (set once).
        c = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            c.close()
            raise
        return c

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """Check a connection out of the pool for the ``with`` block (autocommit mode).

        Raises
        ------
        sqlite3.OperationalError
            If no connection is free within :data:`POOL_WAIT_S` seconds.
        """
        depth: int = getattr(self._held, "n", 0)
        if depth == 0 and not self._slots.acquire(timeout=POOL_WAIT_S):
            raise sqlite3.OperationalError(f"no store database connection free within {POOL_WAIT_S:g} s")
        self._held.n = depth + 1
        try:
            with self._checked_out() as c:
                yield c
        finally:
            self._held.n = depth
            if depth == 0:
                self._slots.release()

    @contextmanager
    def _checked_out(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            c = self._idle.pop()[0] if self._idle else None
            generation = self._generation
        if c is None:
            c = self._open()
        try:
            yield c
        finally:
            keep = False
            try:
                reusable = not c.in_transaction
            except sqlite3.Error:
                reusable = False
            if reusable:
                with self._lock:
                    if generation == self._generation and len(self._idle) < self._pool_idle:
                        self._idle.append((c, time.monotonic()))
                        keep = True
            if not keep:
                c.close()

    def conn(self) -> _Queries:
        """Statements in autocommit mode, each on a pooled connection (use :meth:`transaction` to write)."""
        return self._queries

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on error)."""
        with self.connection() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def open_connections(self) -> int:
        """Idle pooled connections (for tests and metrics)."""
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """Close the idle connections; those checked out are closed when given back."""
        with self._lock:
            conns, self._idle = self._idle, []
            self._generation += 1
        for c, _ in conns:
            c.close()

    # ------------------------------------------------------------ instances
    def add_instance(self, rec: InstanceRecord, now: float | None = None) -> tuple[bool, str | None]:
        """Index one instance and touch its study, in one committed transaction.

        A repeated SOP Instance UID replaces the earlier row (the caller has already
        replaced the file). A study that was complete is re-opened.

        Parameters
        ----------
        rec : InstanceRecord
            The instance.
        now : float, optional
            The receive time (``time.time()`` by default).

        Returns
        -------
        tuple
            ``(new_study, old_path)``: whether the study was first seen now, and the path
            of an earlier copy of this SOP Instance UID stored elsewhere (to delete), if any.
        """
        now = time.time() if now is None else now
        with self.transaction() as c:
            old = c.execute("SELECT path FROM instances WHERE sop_uid=?", (rec.sop_uid,)).fetchone()
            c.execute(
                "INSERT OR REPLACE INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (rec.sop_uid, rec.study_uid, rec.series_uid, rec.sop_class, rec.modality, rec.series_desc,
                 rec.transfer_syntax, rec.path, rec.size, rec.calling_ae, now),
            )
            st = c.execute("SELECT state FROM studies WHERE study_uid=?", (rec.study_uid,)).fetchone()
            if st is None:
                c.execute(
                    "INSERT INTO studies(study_uid, calling_ae, state, first_at, last_at) VALUES (?,?,?,?,?)",
                    (rec.study_uid, rec.calling_ae, "open", now, now),
                )
            elif st["state"] == "complete":
                c.execute(
                    "UPDATE studies SET state='open', last_at=?, reopened=reopened+1, calling_ae=? WHERE study_uid=?",
                    (now, rec.calling_ae, rec.study_uid),
                )
            else:
                c.execute("UPDATE studies SET last_at=? WHERE study_uid=?", (now, rec.study_uid))
        old_path = old["path"] if old is not None and old["path"] != rec.path else None
        return st is None, old_path

    def instance_paths(self, study_uid: str) -> list[Path]:
        """The spool paths of a study's instances, by series then receive time."""
        rows = self.conn().execute(
            "SELECT path FROM instances WHERE study_uid=? ORDER BY series_uid, received_at", (study_uid,)
        ).fetchall()
        return [Path(r["path"]) for r in rows]

    def count_instances(self) -> int:
        """How many instances are indexed."""
        return int(self.conn().execute("SELECT COUNT(*) FROM instances").fetchone()[0])

    def last_received_at(self) -> float:
        """The receive time of the newest indexed instance (0 when there is none)."""
        row = self.conn().execute("SELECT MAX(received_at) FROM instances").fetchone()
        return float(row[0] or 0.0)

    def indexed_paths(self, paths: list[str]) -> set[str]:
        """Those of ``paths`` that are indexed."""
        found: set[str] = set()
        c = self.conn()
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            rows = c.execute(f"SELECT path FROM instances WHERE path IN ({','.join('?' * len(chunk))})", chunk)
            found.update(r["path"] for r in rows)
        return found

    def has_instance(self, sop_uid: str) -> bool:
        """Whether this SOP Instance UID is indexed."""
        return self.conn().execute("SELECT 1 FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone() is not None

    # -------------------------------------------------------------- studies
    def _study_rows(self, where: str, args: tuple[Any, ...]) -> list[StudyRow]:
        rows = self.conn().execute(
            "SELECT s.*, (SELECT COUNT(*) FROM instances i WHERE i.study_uid=s.study_uid) AS n "
            f"FROM studies s {where}",
            args,
        ).fetchall()
        return [
            StudyRow(r["study_uid"], r["calling_ae"], r["state"], r["first_at"], r["last_at"], r["completed_at"],
                     r["reopened"], r["n"])
            for r in rows
        ]

    def study(self, study_uid: str) -> StudyRow | None:
        """One study, or ``None``."""
        rows = self._study_rows("WHERE s.study_uid=?", (study_uid,))
        return rows[0] if rows else None

    def studies(self, limit: int = 200) -> list[StudyRow]:
        """The most recently active studies first."""
        return self._study_rows("ORDER BY s.last_at DESC LIMIT ?", (limit,))

    def series_summary(self, study_uid: str) -> list[dict[str, Any]]:
        """Per series: UID, modality, description, SOP class and instance count."""
        rows = self.conn().execute(
            "SELECT series_uid, modality, series_desc, sop_class, COUNT(*) AS n FROM instances "
            "WHERE study_uid=? GROUP BY series_uid ORDER BY MIN(received_at)",
            (study_uid,),
        ).fetchall()
        return [dict(r) for r in rows]

    def stable_open_studies(self, last_before: float) -> list[str]:
        """Open studies whose last instance arrived before ``last_before``."""
        rows = self.conn().execute(
            "SELECT study_uid FROM studies WHERE state='open' AND last_at < ?", (last_before,)
        ).fetchall()
        return [r["study_uid"] for r in rows]
