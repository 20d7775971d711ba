"""Every association gives back what it held: thousands of them, well-behaved or not.

Several concurrent senders open associations of every kind (echo and release, C-STOREs by
dcmtk's storescu and raw peers, peer aborts, peers that vanish, malformed PDUs, oversized
PDUs, refused callers, connections that close without a byte) against one SCP; afterwards
the process's open descriptors and threads are back to their starting values (± 5) and its
resident memory within +20 %.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from dicom_node.store import InstanceRecord, Store
from tests.dicom_node import rawdicom as rd
from tests.dicom_node.conftest import ScpNode
from tests.dicom_node.test_conn_hygiene import node
from tests.support.mrfiles import make_mr_dataset

ENV = dict(os.environ, TCP_NODELAY="1")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


_STUDY = "1.2.826.0.1.3680043.10.543.1"
_SERIES = "1.2.826.0.1.3680043.10.543.2"


def _dataset_bytes(sop_uid: str) -> bytes:
    """A small MR data set in implicit VR little endian, as a C-STORE carries it."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = make_mr_dataset(study_uid=_STUDY, series_uid=_SERIES, instance_number=1, size=8, sop_uid=sop_uid)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, ds)
    return buf.getvalue()


class Load:
    """The kinds of association a sender opens, in turn."""

    def __init__(self, n: ScpNode, folder: Path) -> None:
        self.n = n
        self.port = n.port
        self.folder = folder
        self.outcomes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.counter = 0
        self.kinds: list[Callable[[int], str]] = [
            self.echo, self.store, self.abort, self.vanish, self.echo, self.malformed, self.oversized,
            self.connect_close, self.bad_request, self.refused, self.missing_uid, self.half_pdu_then_close,
        ]

    def _next_uid(self) -> str:
        with self.lock:
            self.counter += 1
            return f"1.2.826.0.1.3680043.10.543.{os.getpid()}.{self.counter}"

    def echo(self, i: int) -> str:
        a = rd.RawAssociation(self.port)
        ok = a.result == 0x02 and a.echo(1) == 0 and a.echo(2) == 0
        a.release()
        return "echo" if ok else "echo_failed"

    def store(self, i: int) -> str:
        if i % 8 == 0 and shutil.which("storescu"):  # dcmtk now and then (a process per association)
            r = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "MRINODE", "+sd", "127.0.0.1", str(self.port),
                                str(self.folder)], capture_output=True, text=True, env=ENV, timeout=60, check=False)
            return "storescu" if r.returncode == 0 else "storescu_failed"
        a = rd.RawAssociation(self.port, contexts=[(1, rd.MR_STORAGE, [rd.IMPLICIT])])
        ok = a.result == 0x02
        for k in range(2):
            uid = self._next_uid()
            a.sock.sendall(rd.pdata(1, rd.store_rq(k + 1, rd.MR_STORAGE, uid), 0x03)
                           + rd.pdata(1, _dataset_bytes(uid), 0x02))
            kind, body = rd.read_pdu(a.sock)
            ok = ok and kind == 0x04 and rd.status_of(body) == 0
        a.release()
        return "store" if ok else "store_failed"

    def abort(self, i: int) -> str:
        a = rd.RawAssociation(self.port)
        a.echo(1)
        a.sock.sendall(rd.abort_rq())
        a.close()
        return "abort"

    def vanish(self, i: int) -> str:
        a = rd.RawAssociation(self.port)
        a.close()
        return "vanish"

    def malformed(self, i: int) -> str:
        a = rd.RawAssociation(self.port)
        a.sock.sendall(struct.pack(">BBI", 0x09, 0, 4) + b"junk")
        kind, _ = rd.read_pdu(a.sock)
        a.close()
        return "malformed_aborted" if kind == 0x07 else "malformed_other"

    def oversized(self, i: int) -> str:
        a = rd.RawAssociation(self.port)
        a.sock.sendall(struct.pack(">BBI", 0x04, 0, 0x7FFFFFFF) + bytes(4096))
        kind, _ = rd.read_pdu(a.sock)
        a.close()
        return "oversized_aborted" if kind in (0x07, 0) else "oversized_other"

    def connect_close(self, i: int) -> str:
        socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        return "connect_close"

    def bad_request(self, i: int) -> str:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(struct.pack(">BBI", 0x01, 0, 40) + bytes(range(40)))
        kind, _ = rd.read_pdu(s)
        s.close()
        return f"bad_request_{kind}"

    def refused(self, i: int) -> str:
        a = rd.RawAssociation(self.port, calling="NOBODY")
        a.close()
        return "refused" if a.result == 0x03 else "refused_other"

    def missing_uid(self, i: int) -> str:
        a = rd.RawAssociation(self.port, contexts=[(1, rd.MR_STORAGE, [rd.IMPLICIT])])
        a.sock.sendall(rd.pdata(1, rd.store_rq(1, rd.MR_STORAGE, None), 0x03) + rd.pdata(1, b"\x00" * 8, 0x02))
        kind, body = rd.read_pdu(a.sock)
        a.release()
        return "missing_uid" if kind == 0x04 and rd.status_of(body) == 0xC000 else "missing_uid_other"

    def half_pdu_then_close(self, i: int) -> str:
        a = rd.RawAssociation(self.port)
        a.sock.sendall(rd.pdata(1, rd.echo_rq(1), 0x03)[:9])  # header and a bit, then gone
        a.close()
        return "half_pdu"

    def run(self, sender: int, count: int, errors: list[str]) -> None:
        for i in range(count):
            kind = self.kinds[(i + sender) % len(self.kinds)]
            try:
                outcome = kind(i)
            except OSError as exc:
                outcome = f"{kind.__name__}_oserror"
                errors.append(f"{kind.__name__}: {exc}")
            with self.lock:
                self.outcomes[outcome] += 1


def _concurrently(load: Load, senders: int, per_sender: int, errors: list[str]) -> None:
    threads = [threading.Thread(target=load.run, args=(k, per_sender, errors)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _settle(n: ScpNode, fds0: int, threads0: int, timeout: float = 10.0) -> None:
    """Wait for the last associations to end (their peers' closes, ARTIM timers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gc.collect()
        if (n.scp.associated == 0 and n.scp._gate.pending == 0 and _fds() <= fds0
                and threading.active_count() <= threads0):
            return
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize(("fast_reactor", "per_sender"), [(True, 520), (False, 160)])
def test_thousands_of_associations_give_back_what_they_held(tmp_path: Path, fast_reactor: bool, per_sender: int,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(2):
        ds = make_mr_dataset(study_uid=_STUDY, series_uid=_SERIES, instance_number=k + 1, size=8)
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    excepthook_calls: list[str] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: excepthook_calls.append(repr(args.exc_value))
    try:
        threads_idle = threading.active_count() + 1  # with the node's accept loop
        with node(tmp_path, fast_reactor=fast_reactor, association_timeout_s=2.0, max_pdu=65536,
                  max_associations=16) as n:
            load = Load(n, folder)
            # Warm-up with the same concurrency: lazy imports, the connection pool, caches, and
            # the allocator's high-water mark (glibc keeps per-thread arenas): what grows after
            # it is what the associations failed to give back.
            warm: list[str] = []
            _concurrently(load, 4, len(load.kinds) * 4, warm)
            _settle(n, 10**6, threads_idle)
            fds0, threads0, rss0 = _fds(), threading.active_count(), _rss_kib()
            errors: list[str] = []
            t0 = time.monotonic()
            _concurrently(load, 4, per_sender, errors)
            elapsed = time.monotonic() - t0
            _settle(n, fds0, threads0)
            fds1, threads1, rss1 = _fds(), threading.active_count(), _rss_kib()
            total = sum(load.outcomes.values())
            print(f"fast_reactor={fast_reactor}: {total} associations in {elapsed:.1f} s; fds {fds0}->{fds1}, "
                  f"threads {threads0}->{threads1}, RSS {rss0}->{rss1} KiB; {dict(load.outcomes)}")
            assert total >= 4 * per_sender
            bad = {k: v for k, v in load.outcomes.items()
                   if k.endswith(("_failed", "_other", "_oserror")) or (k.startswith("bad_request_") and k != "bad_request_3")}
            assert not bad, (bad, errors[:5])
            assert abs(fds1 - fds0) <= 5, (fds0, fds1)
            assert abs(threads1 - threads0) <= 5, (threads0, threads1)
            assert rss1 <= rss0 * 1.2, (rss0, rss1)
            assert n.scp.associated == 0
            assert not excepthook_calls, excepthook_calls[:3]
            tracebacks = [r.getMessage()[:80] for r in caplog.records if r.exc_info]
            assert not tracebacks, tracebacks[:3]
    finally:
        threading.excepthook = old_hook


def test_store_descriptors_do_not_grow_with_the_threads_that_used_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.db")
    fds0 = _fds()

    def work(k: int) -> None:
        store.add_instance(InstanceRecord(f"1.2.3.{k}", "1.2.3", "1.2.3.0", rd.MR_STORAGE, "MR", "", rd.EXPLICIT,
                                          f"/spool/{k}.dcm", 1, "TESTSCU"))
        assert store.has_instance(f"1.2.3.{k}")

    for k in range(200):  # one thread per "association", as pynetdicom does
        t = threading.Thread(target=work, args=(k,))
        t.start()
        t.join()
    assert store.count_instances() == 200
    assert _fds() - fds0 <= 2
    store.close()
    assert _fds() <= fds0
