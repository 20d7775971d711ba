"""Store database, job queue and tracker: states, re-opening, retries, restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.audit import AuditLog
from dicom_node.config import parse_config
from dicom_node.metrics import NodeMetrics
from dicom_node.queue import JobQueue
from dicom_node.store import InstanceRecord, Store
from dicom_node.tracker import Tracker


def _rec(sop: str, study: str = "1.2.3", path: str = "/x") -> InstanceRecord:
    return InstanceRecord(sop, study, "1.2.3.1", "1.2.840.10008.5.1.4.1.1.4", "MR", "T1", "1.2.840.10008.1.2.1",
                          path + "/" + sop, 10, "STORESCU")


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Store, JobQueue, Tracker]:
    cfg = parse_config({"node": {"data_dir": str(tmp_path)}, "tracker": {"stable_after_s": 10}})
    store = Store(cfg.db_path)
    return store, JobQueue(store), Tracker(cfg, store, NodeMetrics(), AuditLog(cfg.audit_log_path))


def test_duplicate_sop_keeps_one_row_and_reports_the_old_path(parts: tuple[Store, JobQueue, Tracker]) -> None:
    store, _, _ = parts
    assert store.add_instance(_rec("1.1"), now=1.0) == (True, None)
    assert store.add_instance(_rec("1.1"), now=2.0) == (False, None)
    assert store.add_instance(_rec("1.1", path="/elsewhere"), now=3.0) == (False, "/x/1.1")
    assert store.count_instances() == 1


def test_completion_reopening_and_requeue(parts: tuple[Store, JobQueue, Tracker]) -> None:
    store, queue, tracker = parts
    store.add_instance(_rec("1.1"), now=100.0)
    assert tracker.poll_once(now=105.0) == []  # not stable yet
    [job_id] = tracker.poll_once(now=111.0)
    assert tracker.complete("1.2.3") is None  # already complete, nothing new
    with pytest.raises(KeyError):
        tracker.complete("9.9.9")
    job = queue.claim_next()
    assert job is not None and job.id == job_id and job.state == "running" and job.attempts == 1
    # A late instance re-opens the study; the next completion queues a second job.
    store.add_instance(_rec("1.2"), now=120.0)
    study = store.study("1.2.3")
    assert study is not None and study.state == "open" and study.reopened == 1 and study.n_instances == 2
    second = tracker.complete("1.2.3")
    assert second is not None and second != job_id
    # Re-opened again while the second job still waits: no third job.
    store.add_instance(_rec("1.3"), now=130.0)
    assert tracker.complete("1.2.3") is None
    assert queue.counts()["queued"] == 1


def test_run_failures_retry_then_fail(parts: tuple[Store, JobQueue, Tracker]) -> None:
    store, queue, tracker = parts
    store.add_instance(_rec("1.1"))
    job_id = tracker.complete("1.2.3")
    assert job_id is not None
    job = queue.claim_next()
    assert job is not None
    queue.set_run_failed(job.id, "boom", retry=True)
    j = queue.get(job.id)
    assert j is not None and j.state == "queued" and j.last_error == "boom"
    job = queue.claim_next()
    assert job is not None and job.attempts == 2
    queue.set_run_failed(job.id, "boom again", retry=False)
    j = queue.get(job.id)
    assert j is not None and j.state == "failed" and j.finished_at is not None
    # Retry without kept results re-runs it from scratch.
    assert queue.retry(job.id).state == "queued"


def test_export_states_and_retry_resends(parts: tuple[Store, JobQueue, Tracker], tmp_path: Path) -> None:
    store, queue, tracker = parts
    store.add_instance(_rec("1.1"))
    tracker.complete("1.2.3")
    job = queue.claim_next()
    assert job is not None
    out = tmp_path / "seg.dcm"
    out.write_bytes(b"x")
    queue.set_processed(job.id, tmp_path, [out], {"a": 1}, {"pipeline_s": 1.0})
    exp = queue.claim_export()
    assert exp is not None and exp.state == "exporting" and exp.outputs == [str(out)]
    assert queue.claim_export() is None  # parked while being exported
    queue.set_export_failed(job.id, "down", None)
    failed = queue.get(job.id)
    assert failed is not None and failed.state == "failed" and failed.export_attempts == 1
    again = queue.retry(job.id)
    assert again.state == "exporting" and again.export_attempts == 0  # results kept: re-send
    assert queue.retry(job.id, rerun=True).state == "queued"


def test_restart_requeues_running_jobs_without_counting_the_run(parts: tuple[Store, JobQueue, Tracker]) -> None:
    store, queue, tracker = parts
    store.add_instance(_rec("1.1"))
    tracker.complete("1.2.3")
    job = queue.claim_next()
    assert job is not None and job.attempts == 1
    assert queue.requeue_running() == 1
    j = queue.get(job.id)
    assert j is not None and j.state == "queued" and j.attempts == 0
    with pytest.raises(ValueError, match="running"):
        queue.claim_next()
        queue.retry(job.id)


def _db_descriptors(db: Path) -> int:
    import os

    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(db)):
                n += 1
        except OSError:
            pass
    return n


def test_concurrent_threads_share_a_bounded_pool(tmp_path: Path) -> None:
    """Issue 15: 24 threads storing at once use at most POOL_SIZE connections, and closing
    none under load leaves no descriptor parked inside SQLite (its deferred closes)."""
    import threading

    from dicom_node import store as store_module

    store = Store(tmp_path / "node.db")
    before = _db_descriptors(tmp_path / "node.db")
    in_use = peak = 0
    lock = threading.Lock()
    real = getattr(store, "_checked_out", None) or store.connection

    def counting() -> object:
        import contextlib

        @contextlib.contextmanager
        def wrapped():  # type: ignore[no-untyped-def]
            nonlocal in_use, peak
            with real() as c:
                with lock:
                    in_use += 1
                    peak = max(peak, in_use)
                try:
                    yield c
                finally:
                    with lock:
                        in_use -= 1
        return wrapped()

    if hasattr(store, "_checked_out"):
        store._checked_out = counting  # type: ignore[method-assign,assignment]
    else:  # the store before the bounded pool
        store.connection = counting  # type: ignore[method-assign,assignment]

    def sender(k: int) -> None:
        for i in range(40):
            store.add_instance(InstanceRecord(
                sop_uid=f"1.2.3.{k}.{i}", study_uid=f"1.2.3.{k}", series_uid=f"1.2.3.{k}.0", sop_class="1.2",
                modality="MR", series_desc="", transfer_syntax="1.2.840.10008.1.2.1", path=f"/x/{k}/{i}", size=1,
                calling_ae="A"))
            store.count_instances()

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count_instances() == 24 * 40
    assert 1 < peak <= store_module.POOL_SIZE
    # One connection at start (db + wal), at most POOL_SIZE after: 2 descriptors each.
    assert _db_descriptors(tmp_path / "node.db") - before <= 2 * (store_module.POOL_SIZE - 1)
    store.close()
