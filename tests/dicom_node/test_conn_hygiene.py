"""Connection hygiene: ARTIM timeout, caps on unassociated peers, slots, PDU limits, DIMSE checks."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from dicom_node.audit import AuditLog
from dicom_node.metrics import NodeMetrics
from dicom_node.netguard import ASSOCIATE_MAX, pdu_limit
from dicom_node.scp import StoreSCP
from dicom_node.spool import Spool
from dicom_node.store import Store
from tests.dicom_node import rawdicom as rd
from tests.dicom_node.conftest import ScpNode, make_config
from tests.support.mrfiles import write_mr_series

ENV = dict(os.environ, TCP_NODELAY="1")
needs_dcmtk = pytest.mark.skipif(shutil.which("echoscu") is None, reason="dcmtk is not installed")


@contextmanager
def node(tmp_path: Path, **dicom: Any) -> Iterator[ScpNode]:
    """A started SCP with these ``[dicom]`` settings."""
    cfg = make_config(tmp_path, **dicom)
    store = Store(cfg.db_path)
    metrics = NodeMetrics()
    scp = StoreSCP(cfg, store, Spool(cfg.spool_dir), metrics, AuditLog(cfg.audit_log_path))
    n = ScpNode(cfg, store, Spool(cfg.spool_dir), metrics, AuditLog(cfg.audit_log_path), scp)
    scp.start()
    try:
        yield n
    finally:
        scp.stop(grace_s=2)
        store.close()


def _dropped(n: ScpNode, reason: str) -> float:
    return n.metric("mrinode_connections_dropped_total", {"reason": reason})


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _closed_by_peer(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def _echoscu(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-aet", "ECHOSCU", "-aec", "MRINODE", "-to", "5", "127.0.0.1", str(port)],
                          capture_output=True, text=True, env=ENV, timeout=30, check=False)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_silent_connection_is_closed_after_the_association_timeout(tmp_path: Path) -> None:
    with node(tmp_path, association_timeout_s=1.0) as n:
        silent, half = _connect(n.port), _connect(n.port)
        half.sendall(b"\x01\x00\x00")  # half a PDU header
        t0 = time.monotonic()
        assert _closed_by_peer(silent, 5) and _closed_by_peer(half, 5)
        assert 0.8 < time.monotonic() - t0 < 3
        assert _dropped(n, "artim") == 2
        # A connection that sends its request in time is served as before.
        a = rd.RawAssociation(n.port)
        assert a.result == 0x02 and a.echo(1) == 0
        a.release()


@needs_dcmtk
def test_well_behaved_peers_are_served_while_100_idle_or_slow_ones_are_held(tmp_path: Path) -> None:
    with node(tmp_path, association_timeout_s=30.0, max_associations=4) as n:
        held = []
        for i in range(100):  # 13 hosts (127.0.0.10...), 8 each at most: all held under the global cap
            s = _connect(n.port, source=f"127.0.0.{10 + i // 8}")
            if i % 2:
                s.sendall(b"\x01\x00\x00")  # half a PDU header
            held.append(s)
        time.sleep(0.3)
        assert n.scp._gate.pending == 100
        t0 = time.monotonic()
        for _ in range(5):
            r = _echoscu(n.port)
            assert r.returncode == 0, r.stderr
        a = rd.RawAssociation(n.port, contexts=[(1, rd.VERIFICATION, [rd.IMPLICIT])])
        assert a.result == 0x02 and a.echo(3) == 0
        a.release()
        _, paths = write_mr_series(tmp_path / "in", 3)
        r = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "MRINODE", "127.0.0.1", str(n.port),
                            *map(str, paths)], capture_output=True, text=True, env=ENV, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        assert n.store.count_instances() == 3
        assert time.monotonic() - t0 < 15
        assert _dropped(n, "host_cap") == _dropped(n, "pending_cap") == 0
        for s in held:
            s.close()


def test_per_host_cap_closes_the_oldest_unassociated_connection(tmp_path: Path) -> None:
    with node(tmp_path, max_pending_per_host=8, max_pending=16, allow_any_caller=True) as n:
        same_host = [_connect(n.port, source="127.0.0.7") for _ in range(12)]
        time.sleep(0.3)
        assert n.scp._gate.pending == 8
        assert all(_closed_by_peer(s, 2) for s in same_host[:4])
        assert not any(_closed_by_peer(s, 0.05) for s in same_host[4:])
        assert _dropped(n, "host_cap") == 4
        others = [_connect(n.port, source=f"127.0.1.{i}") for i in range(12)]
        time.sleep(0.3)
        assert n.scp._gate.pending == 16 and _dropped(n, "pending_cap") == 4
        # The node still answers: a new peer's request arrives at once, it is never the oldest.
        a = rd.RawAssociation(n.port, source="127.0.0.7")
        assert a.result == 0x02 and a.echo(1) == 0
        a.release()
        for s in same_host + others:
            s.close()


def test_slots_are_taken_only_by_associated_peers(tmp_path: Path) -> None:
    with node(tmp_path, max_associations=2) as n:
        idle = [_connect(n.port, source="127.0.0.9") for _ in range(6)]
        first, second = rd.RawAssociation(n.port), rd.RawAssociation(n.port)
        assert first.result == second.result == 0x02
        third = rd.RawAssociation(n.port)
        assert third.result == 0x03  # A-ASSOCIATE-RJ: busy
        third.close()
        assert n.metric("mrinode_associations_refused_total", {"reason": "busy"}) == 1
        first.release()
        deadline = time.monotonic() + 5
        while n.scp.associated > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        fourth = rd.RawAssociation(n.port)
        assert fourth.result == 0x02 and fourth.echo(2) == 0
        second.close()  # a peer that vanishes gives its slot back as well
        fourth.release()
        deadline = time.monotonic() + 5
        while n.scp.associated and time.monotonic() < deadline:
            time.sleep(0.02)
        assert n.scp.associated == 0
        for s in idle:
            s.close()


def test_pdu_limits() -> None:
    assert pdu_limit(0x04, 16384) == 16384
    assert pdu_limit(0x04, 0) == 16 * 1024 * 1024
    assert pdu_limit(0x01, 0) == ASSOCIATE_MAX
    assert pdu_limit(0x05, 16384) == 64 * 1024


@pytest.mark.parametrize("fast_reactor", [True, False])
def test_oversized_pdu_is_aborted_before_its_bytes_are_read(tmp_path: Path, fast_reactor: bool) -> None:
    with node(tmp_path, fast_reactor=fast_reactor, max_pdu=16384) as n:
        rss0 = _rss_kib()
        a = rd.RawAssociation(n.port)
        assert a.result == 0x02
        a.sock.sendall(struct.pack(">BBI", 0x04, 0, 0xFFFFFFFF))
        a.sock.settimeout(5)
        sent = 0
        chunk = b"\x00" * (1 << 20)
        with suppress(OSError):
            while sent < 64 << 20:  # up to 64 MiB more: the node must neither read nor buffer it
                sent += a.sock.send(chunk)
        kind, _ = rd.read_pdu(a.sock)
        assert kind in (0x07, 0)  # A-ABORT (or already closed, when the send filled the buffers)
        assert _closed_by_peer(a.sock, 5)
        a.close()
        assert _dropped(n, "pdu_too_large") == 1
        assert _rss_kib() - rss0 < 20 * 1024
        # A PDU one byte over max_pdu is refused as well; one at max_pdu is read.
        b = rd.RawAssociation(n.port)
        b.sock.sendall(struct.pack(">BBI", 0x04, 0, 16385))
        kind, _ = rd.read_pdu(b.sock)
        assert kind in (0x07, 0) and _closed_by_peer(b.sock, 5)
        b.close()
        # An A-ASSOCIATE-RQ announcing more than ASSOCIATE_MAX is aborted by the gate.
        s = _connect(n.port)
        s.sendall(struct.pack(">BBI", 0x01, 0, ASSOCIATE_MAX + 1))
        kind, _ = rd.read_pdu(s)
        assert kind == 0x07 and _closed_by_peer(s, 5)
        s.close()
        assert _dropped(n, "pdu_too_large") == 3


def _store_rq_pdus(context_id: int, message_id: int, sop_class: str, sop_instance: str | None) -> bytes:
    dataset = b"\x08\x00\x16\x00" + struct.pack("<I", 2) + b"1\x00"  # any data set: it is not read
    return (rd.pdata(context_id, rd.store_rq(message_id, sop_class, sop_instance), 0x03)
            + rd.pdata(context_id, dataset, 0x02))


@pytest.mark.parametrize("fast_reactor", [True, False])
def test_malformed_or_misplaced_requests_are_answered_at_once(tmp_path: Path, fast_reactor: bool) -> None:
    with node(tmp_path, fast_reactor=fast_reactor) as n:
        a = rd.RawAssociation(n.port, contexts=[(1, rd.VERIFICATION, [rd.IMPLICIT]), (3, rd.MR_STORAGE, [rd.IMPLICIT])])
        assert a.contexts == {1: 0, 3: 0}
        a.sock.settimeout(1.0)  # every answer within 1 s
        for msg_id, uid in ((5, None), (6, "")):  # no Affected SOP Instance UID, or an empty one
            a.sock.sendall(_store_rq_pdus(3, msg_id, rd.MR_STORAGE, uid))
            kind, body = rd.read_pdu(a.sock)
            assert kind == 0x04
            fields = rd.command_fields(body)
            assert rd.status_of(body) == 0xC000
            assert struct.unpack("<H", fields[0x0120])[0] == msg_id and struct.unpack("<H", fields[0x0100])[0] == 0x8001
        # A C-STORE on the Verification context is refused (0x0122), not answered by a C-ECHO-RSP.
        for sop_class in (rd.VERIFICATION, rd.MR_STORAGE):
            a.sock.sendall(_store_rq_pdus(1, 7, sop_class, "1.2.3.4"))
            kind, body = rd.read_pdu(a.sock)
            assert kind == 0x04 and rd.status_of(body) == 0x0122
            assert struct.unpack("<H", rd.command_fields(body)[0x0100])[0] == 0x8001
        # A C-ECHO on a storage context is refused likewise; the association lives on.
        assert a.echo(8, context_id=3) == 0x0122
        assert a.echo(9, context_id=1) == 0
        a.release()
        assert n.metric("mrinode_store_failures_total", {"status": "0xC000"}) == 2
        assert n.metric("mrinode_store_failures_total", {"status": "0x0122"}) == 2
        assert n.store.count_instances() == 0


@pytest.mark.parametrize("fast_reactor", [True, False])
def test_every_c_echo_is_answered(tmp_path: Path, fast_reactor: bool) -> None:
    """C-ECHOs each answered: the first one of 400 fresh associations (sent as soon as the
    A-ASSOCIATE-AC arrives), then 10 000 on one association (fewer with pynetdicom's
    reactor, which sleeps 1 ms per loop turn).

    A raw peer: pynetdicom's SCU loses some responses itself ("Received unexpected C-ECHO
    service message", the race of pydicom/pynetdicom#875 on the requestor side).
    """
    with node(tmp_path, fast_reactor=fast_reactor, allow_any_caller=True) as n:
        first = []
        for _ in range(400 if fast_reactor else 100):
            a = rd.RawAssociation(n.port, timeout=2)
            try:
                first.append(a.echo(1))
            except TimeoutError:
                first.append(-1)
            a.release()
        assert first.count(0) == len(first), f"{first.count(-1)} first C-ECHOs not answered"
        a = rd.RawAssociation(n.port, timeout=5)
        statuses = [a.echo(i % 65535 + 1) for i in range(10_000 if fast_reactor else 500)]
        a.release()
        assert statuses.count(0) == len(statuses)


def test_ae_titles_with_control_characters_are_refused_unquoted(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with node(tmp_path, allow_any_caller=True) as n:
        for calling, called, reason in (("EVIL\nFAKE LOG", "MRINODE", 3), ("TESTSCU", "MRI\\NODE\x00", 7)):
            s = _connect(n.port)
            rq = bytearray(rd.associate_rq())
            rq[10:26] = called.encode("latin-1").ljust(16)[:16]
            rq[26:42] = calling.encode("latin-1").ljust(16)[:16]
            s.sendall(bytes(rq))
            kind, body = rd.read_pdu(s)
            assert kind == 0x03 and body[1:] == bytes([1, 1, reason])
            s.close()
        assert _dropped(n, "bad_ae_title") == 2
        assert not any("FAKE" in r.getMessage() or "\n" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fast_reactor", [True, False])
def test_associations_on_descriptors_above_1024(tmp_path: Path, fast_reactor: bool) -> None:
    """``select()`` cannot watch a descriptor above 1 023: the node uses ``poll``/``epoll``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip("the descriptor limit is below 1 400")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    fillers: list[int] = []
    try:
        with node(tmp_path, fast_reactor=fast_reactor) as n:
            while len(os.listdir("/proc/self/fd")) < 1100:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            for k in range(3):
                a = rd.RawAssociation(n.port)
                assert a.result == 0x02 and a.echo(k + 1) == 0
                a.release()
            r = _echoscu(n.port) if shutil.which("echoscu") else None
            assert r is None or r.returncode == 0, r.stderr
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_handshake_does_not_block_the_accept_loop(tmp_path: Path) -> None:
    """The TLS handshake runs in the gate, bounded by the association timeout (pynetdicom ran it
    in the accept loop, without a timeout: one silent peer stopped every later connection)."""
    from pydicom.uid import ImplicitVRLittleEndian
    from pynetdicom import AE

    from tests.dicom_node.test_tls import _client_context, _pki

    pki = tmp_path / "pki"
    pki.mkdir()
    _pki(pki)
    tls = {"enabled": True, "cert": str(pki / "server.crt"), "key": str(pki / "server.key"), "ca": str(pki / "ca.crt"),
           "verify_client": True}
    with node(tmp_path, tls=tls, association_timeout_s=1.0) as n:
        silent = _connect(n.port)
        garbage = _connect(n.port)
        garbage.sendall(rd.associate_rq())  # plain DICOM on the TLS port
        ae = AE(ae_title="TESTSCU")
        ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 3
        ae.add_requested_context(rd.VERIFICATION, [ImplicitVRLittleEndian])
        t0 = time.monotonic()
        assoc = ae.associate("127.0.0.1", n.port, ae_title="MRINODE", tls_args=(_client_context(pki, True), "127.0.0.1"))
        try:
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0
            assoc.release()
            assert time.monotonic() - t0 < 1.0
            assert _closed_by_peer(garbage, 3) and _closed_by_peer(silent, 3)
            assert _dropped(n, "tls") == 1 and _dropped(n, "artim") == 1
        finally:
            silent.close()
            garbage.close()


_UNKNOWN_COMMAND = rd.command([(0x0002, b"1.2.840.10008.5.1.4.1.1.4\x00"), (0x0100, b"\x0f\x0f"), (0x0110, b"\x16\x00"),
                               (0x0800, b"\x00\x00")])
_STORE_WITHOUT_DATA_SET = rd.command([(0x0002, b"1.2.840.10008.5.1.4.1.1.4\x00"), (0x0100, b"\x01\x00"),
                                      (0x0110, b"\x17\x00"), (0x0700, b"\x00\x00"), (0x0800, b"\x01\x01"),
                                      (0x1000, b"1.2.826.0.1.3680043.8.498.77.8\x00")])


@pytest.mark.parametrize("fast_reactor", [True, False])
@pytest.mark.parametrize(("command", "answer"), [
    (rd.store_rq(5, rd.MR_STORAGE, "1." * 40 + "1"), 0xC000),  # a UID over 64 characters
    (rd.store_rq(5, rd.MR_STORAGE, "1.2.3\nFAKE LOG LINE"), 0xC000),
    (rd.store_rq(5, rd.MR_STORAGE, "1.2.abc.4"), 0xC000),
    (_STORE_WITHOUT_DATA_SET, 0xC000),
    (_UNKNOWN_COMMAND, None),  # A-ABORT
    (bytes(range(1, 200)), None),
], ids=["long-uid", "newline-uid", "letters-uid", "no-data-set", "unknown-command", "random-bytes"])
def test_unreadable_commands_are_answered_or_aborted_without_traceback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, fast_reactor: bool, command: bytes, answer: int | None) -> None:
    with node(tmp_path, fast_reactor=fast_reactor) as n:
        a = rd.RawAssociation(n.port, contexts=[(1, rd.VERIFICATION, [rd.IMPLICIT]), (3, rd.MR_STORAGE, [rd.IMPLICIT])],
                              timeout=1.0)
        a.sock.sendall(rd.pdata(3, command, 0x03))
        if answer is not None and command is not _STORE_WITHOUT_DATA_SET:
            a.sock.sendall(rd.pdata(3, b"\x08\x00\x16\x00\x02\x00\x00\x001\x00", 0x02))  # its data set
        kind, body = rd.read_pdu(a.sock)
        if answer is None:
            assert kind == 0x07
        else:
            assert kind == 0x04 and rd.status_of(body) == answer
            assert a.echo(9) == 0  # the association lives on
            a.release()
        a.close()
        time.sleep(0.2)
        assert not [r.getMessage() for r in caplog.records if r.exc_info or r.exc_text]
        assert not any("FAKE" in r.getMessage() for r in caplog.records)
        if answer is not None:
            assert n.metric("mrinode_store_failures_total", {"status": "0xC000"}) == 1


@pytest.mark.parametrize("fast_reactor", [True, False])
def test_a_data_set_past_the_size_limit_aborts(tmp_path: Path, fast_reactor: bool) -> None:
    """Both readers hold a data set in memory until its last fragment: that memory is bounded."""
    with node(tmp_path, fast_reactor=fast_reactor, max_inflated_mb=1) as n:
        a = rd.RawAssociation(n.port, contexts=[(3, rd.MR_STORAGE, [rd.IMPLICIT])])
        a.sock.sendall(rd.pdata(3, rd.store_rq(1, rd.MR_STORAGE, "1.2.826.0.1.3680043.10.543.99"), 0x03))
        with suppress(OSError):
            for _ in range(8):  # 8 x 200 KiB, never the last fragment
                a.sock.sendall(rd.pdata(3, bytes(200 * 1024), 0x00))
        kind, _ = rd.read_pdu(a.sock)
        assert kind in (0x07, 0) and _closed_by_peer(a.sock, 5)
        a.close()
        assert _dropped(n, "dataset_too_large") == 1
        assert n.store.count_instances() == 0
