"""Start-up recovery: index spool files whose index rows were lost.

The spool file of every acknowledged instance is fsynced before the answer; its index
row is committed with ``synchronous=NORMAL`` (see :mod:`dicom_node.store`), which a
power loss (not a crash of the node) can undo. At start-up the node therefore indexes
every spool file written since shortly before its newest index row that has no row,
so such an instance is not left out of its study's job.

An instance the node answered with a failure leaves no spool file (see
:meth:`dicom_node.scp.StoreSCP._store_stream`), so what is found here was accepted, or
completely written just before a crash. When the database cannot be written (a full
disk) recovery logs a warning and stops; the files stay for the next start, and the
node starts all the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_node.logs import uid_tag
from dicom_node.store import InstanceRecord

if TYPE_CHECKING:
    from dicom_node.spool import Spool
    from dicom_node.store import Store

__all__ = ["reindex_unindexed"]

log = logging.getLogger(__name__)

#: How far before the newest index row the spool is searched (covers clock steps and
#: transactions lost before the newest one that survived).
MARGIN_S = 300.0


def _record(path: Path) -> InstanceRecord:
    from pydicom import dcmread

    ds = dcmread(path, stop_before_pixels=True,
                 specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                                "Modality", "SeriesDescription"])
    meta = ds.file_meta
    return InstanceRecord(
        sop_uid=str(ds.SOPInstanceUID), study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.get("SeriesInstanceUID", "")), sop_class=str(ds.get("SOPClassUID", "")),
        modality=str(ds.get("Modality", "")), series_desc=str(ds.get("SeriesDescription", "")),
        transfer_syntax=str(meta.get("TransferSyntaxUID", "")), path=str(path), size=path.stat().st_size,
        calling_ae=str(meta.get("SourceApplicationEntityTitle", "")).strip(),
    )


def reindex_unindexed(store: Store, spool: Spool, margin_s: float = MARGIN_S) -> int:
    """Index spool files that have no index row.

    Parameters
    ----------
    store : Store
        The store database.
    spool : Spool
        The spool.
    margin_s : float
        Files modified since ``newest row - margin_s`` are checked.

    Returns
    -------
    int
        How many files were indexed.
    """
    from pydicom.errors import InvalidDicomError

    try:
        since = max(store.last_received_at() - margin_s, 0.0)
        files = spool.files_since(since)
        indexed = store.indexed_paths([str(p) for p in files]) if files else set()
    except (sqlite3.Error, OSError) as exc:
        log.warning("start-up recovery skipped: cannot read the store or the spool (%s)", exc)
        return 0
    todo = [p for p in files if str(p) not in indexed]
    n = 0
    for i, path in enumerate(todo):
        try:
            rec = _record(path)
        except (OSError, ValueError, AttributeError, KeyError, InvalidDicomError) as exc:
            # Not a readable instance (e.g. a write the power loss cut short): keep it aside.
            log.warning("spool file %s cannot be read (%s); moved aside", path.name, type(exc).__name__)
            with contextlib.suppress(OSError):
                os.replace(path, path.with_suffix(".unreadable"))
            continue
        try:
            store.add_instance(rec, now=path.stat().st_mtime)
        except (sqlite3.Error, OSError) as exc:
            log.warning("cannot re-index %d spool file(s) now (%s); they stay for the next start",
                        len(todo) - i, exc)
            break
        log.warning("re-indexed instance %s of study %s (its index row was lost)", uid_tag(rec.sop_uid),
                    uid_tag(rec.study_uid))
        n += 1
    return n
