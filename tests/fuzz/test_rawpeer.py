"""A running StoreSCP against the scripted raw-socket peer (:mod:`tests.support.rawpeer`).

Each scenario is something a sloppy or hostile network does (a port scanner, a hung
modality, a broken implementation, an attacker); after each one the node must still serve
a well-behaved dcmtk ``echoscu`` and ``storescu``, and everything it acknowledged must be
on disk and in the database. A last test throws Hypothesis-made PDU streams at it.

On the code of issue 15's report (commit d50c3a0) eleven of these fail: connect-and-close
makes the node busy; an idle peer, a half PDU header or garbage before the A-ASSOCIATE-RQ is
never dropped; 100 idle or slow peers lock out a well-behaved one; garbage read as a 134 MB
P-DATA and a 4 GiB PDU are waited for and buffered; a C-STORE without (or with an empty) SOP
Instance UID is answered after 10 s on both paths; a C-STORE on the Verification context is
stored and answered success. The netguard fixes (0ea7f2e, e9f0ad9) make them pass.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicom_node.audit import AuditLog
from dicom_node.metrics import NodeMetrics
from dicom_node.scp import StoreSCP
from dicom_node.spool import Spool
from dicom_node.store import Store
from tests.dicom_node.conftest import ScpNode, make_config
from tests.fuzz.mutate import byte_mutations, fuzz_settings
from tests.support.mrfiles import make_mr_dataset, write_mr_series
from tests.support.rawpeer import (
    EXPLICIT_LE,
    IMPLICIT_LE,
    MR_STORAGE,
    VERIFICATION,
    PeerClosedError,
    RawPeer,
    a_associate_rq,
    c_echo_rq,
    c_store_rq,
    command_set,
    p_data,
)

ENV = dict(os.environ, TCP_NODELAY="1")
CONTEXTS = [(1, VERIFICATION, [IMPLICIT_LE]), (3, MR_STORAGE, [EXPLICIT_LE])]
#: Short timers for the tests: a connection must associate within 2 s.
NODE_OPTIONS: dict[str, Any] = {"association_timeout_s": 2.0, "max_pdu": 16384, "network_timeout_s": 30.0}

NodeFactory = Callable[..., ScpNode]


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[NodeFactory]:
    """Start in-process SCPs with :data:`NODE_OPTIONS` (overridable); all stopped at the end."""
    nodes: list[ScpNode] = []

    def make(**dicom: Any) -> ScpNode:
        cfg = make_config(tmp_path / f"node{len(nodes)}", **{**NODE_OPTIONS, **dicom})
        store, metrics = Store(cfg.db_path), NodeMetrics()
        node = ScpNode(cfg, store, Spool(cfg.spool_dir), metrics, AuditLog(cfg.audit_log_path),
                       StoreSCP(cfg, store, Spool(cfg.spool_dir), metrics, AuditLog(cfg.audit_log_path)))
        node.scp.start()
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        for node in nodes:
            node.scp.stop(grace_s=2)
            node.store.close()


@pytest.fixture
def node(node_factory: NodeFactory) -> ScpNode:
    """One node with :data:`NODE_OPTIONS`."""
    return node_factory()


def _dataset(sop_uid: str, study_uid: str = "1.2.826.0.1.3680043.8.498.77.1", implicit: bool = False) -> bytes:
    """An MR dataset (explicit VR little endian or implicit, no file meta) with this SOP Instance UID."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = make_mr_dataset(study_uid=study_uid, series_uid=study_uid + ".2", instance_number=1, size=16, sop_uid=sop_uid)
    del ds.file_meta
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def _dcmtk(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, env=ENV, timeout=timeout, check=False)


def assert_still_serves(node: ScpNode, folder: Path, acknowledged: tuple[str, ...] = ()) -> None:
    """A well-behaved echoscu and storescu are served, and every acknowledged instance is kept.

    Parameters
    ----------
    node : ScpNode
        The node under test.
    folder : Path
        A scratch folder for the storescu files.
    acknowledged : tuple of str
        SOP Instance UIDs the raw peer got a success status for.
    """
    timers = ("-to", "10", "-ta", "10", "-td", "10")
    t0 = time.monotonic()
    r = _dcmtk("echoscu", *timers, "-aec", "MRINODE", "127.0.0.1", str(node.port))
    assert r.returncode == 0, f"echoscu failed after {time.monotonic() - t0:.1f} s: {r.stderr[-500:]}"
    _, paths = write_mr_series(folder / "well-behaved", 3, size=16)
    r = _dcmtk("storescu", *timers, "-aec", "MRINODE", "127.0.0.1", str(node.port), *map(str, paths))
    assert r.returncode == 0, f"storescu failed: {r.stderr[-500:]}"
    # Nothing acknowledged that is not on disk, nothing on disk the index does not know.
    stored = {p.name for p in node.cfg.spool_dir.rglob("*.dcm")}
    assert node.store.count_instances() == len(stored)
    for sop in acknowledged:
        assert any(sop in name for name in stored), f"instance acknowledged but not on disk: {sop}"
    assert not list(node.cfg.spool_dir.rglob("*.tmp")), "a half-written spool file was left behind"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


# --------------------------------------------------------------------------- connections
def test_connect_and_close_does_not_make_the_node_busy(node: ScpNode, tmp_path: Path) -> None:
    for _ in range(32):
        RawPeer("127.0.0.1", node.port).close()
    assert_still_serves(node, tmp_path)


def test_idle_connection_is_dropped_after_the_association_timeout(node: ScpNode, tmp_path: Path) -> None:
    with RawPeer("127.0.0.1", node.port) as idle, RawPeer("127.0.0.1", node.port) as half:
        half.send(b"\x01\x00\x00")  # half an A-ASSOCIATE-RQ header
        t0 = time.monotonic()
        assert idle.closed_within(NODE_OPTIONS["association_timeout_s"] + 3.0)
        assert half.closed_within(max(0.5, NODE_OPTIONS["association_timeout_s"] + 3.0 - (time.monotonic() - t0)))
    assert_still_serves(node, tmp_path)


def test_well_behaved_peer_is_served_while_100_idle_or_slow_peers_are_held(
    node_factory: NodeFactory, tmp_path: Path,
) -> None:
    node = node_factory(association_timeout_s=30.0)
    held: list[RawPeer] = []
    try:
        for i in range(100):
            peer = RawPeer("127.0.0.1", node.port, source="127.0.0.2" if i % 2 else "127.0.0.3")
            if i % 3 == 0:
                peer.send(b"\x01\x00\x00\x00")  # a PDU header that never ends
            held.append(peer)
        assert_still_serves(node, tmp_path)
    finally:
        for peer in held:
            peer.close()


def test_garbage_instead_of_an_association_request(node: ScpNode, tmp_path: Path) -> None:
    with RawPeer("127.0.0.1", node.port) as peer:
        peer.send(bytes(range(256)) * 16)
        assert peer.closed_within(5.0)
    assert_still_serves(node, tmp_path)


def test_garbage_after_the_association_request(node: ScpNode, tmp_path: Path) -> None:
    with RawPeer("127.0.0.1", node.port) as peer:
        peer.associate(CONTEXTS)
        with contextlib.suppress(PeerClosedError):
            peer.send(b"\x04\x00" + bytes(range(7, 256)) * 16)
        assert peer.closed_within(5.0)
    assert_still_serves(node, tmp_path)


# --------------------------------------------------------------------------- PDU length
@pytest.mark.parametrize("announced", [
    pytest.param(0xFFFFFFFF, id="4GiB"),
    pytest.param(4 * 16384 + 6, id="4x-max-pdu"),
])
def test_pdu_longer_than_max_pdu_is_aborted_before_it_is_buffered(
    node: ScpNode, tmp_path: Path, announced: int,
) -> None:
    send_mb = 64 if announced == 0xFFFFFFFF else 0
    rss0 = _rss_mb()
    with RawPeer("127.0.0.1", node.port) as peer:
        peer.associate(CONTEXTS)
        body = b"\x00" * (announced if not send_mb else 1 << 20)
        sent = 0
        try:
            peer.send(struct.pack(">BBI", 0x04, 0, announced))
            for _ in range(max(1, send_mb)):
                peer.send(body)
                sent += len(body)
        except PeerClosedError:
            pass
        # A-ABORT then close, or close: either way within a second, not after buffering it all.
        assert peer.closed_within(1.0), f"the node kept reading after {sent} bytes"
    if send_mb:
        assert _rss_mb() - rss0 < send_mb / 2, "the node buffered the oversized PDU"
    assert_still_serves(node, tmp_path)


# --------------------------------------------------------------------------- DIMSE
@pytest.mark.parametrize("fast_reactor", [True, False], ids=["fast", "pynetdicom"])
@pytest.mark.parametrize(
    ("sop_class", "sop_instance"),
    [
        pytest.param(MR_STORAGE, None, id="no-sop-instance"),
        pytest.param(MR_STORAGE, "", id="empty-sop-instance"),
    ],
)
def test_malformed_store_command_is_answered_with_a_failure_at_once(
    node_factory: NodeFactory, tmp_path: Path, fast_reactor: bool, sop_class: str, sop_instance: str | None,
) -> None:
    node = node_factory(fast_reactor=fast_reactor)
    data = _dataset("1.2.826.0.1.3680043.8.498.77.3")
    with RawPeer("127.0.0.1", node.port) as peer:
        peer.associate(CONTEXTS)
        t0 = time.monotonic()
        peer.send_command(3, c_store_rq(5, sop_class, sop_instance))
        peer.send_dataset(3, data)
        rsp = peer.read_response(timeout=3.0)
        assert time.monotonic() - t0 < 1.0, f"answered after {time.monotonic() - t0:.1f} s"
        assert rsp.command == 0x8001 and rsp.status not in (None, 0x0000, 0x0001, 0xB000, 0xB007, 0xB006)
        # The association lives on: a C-ECHO is answered.
        peer.send_command(1, c_echo_rq(6))
        assert peer.read_response(timeout=3.0).status == 0x0000
        peer.release()
    assert node.store.count_instances() == 0
    assert_still_serves(node, tmp_path)


BROKEN_COMMANDS = {
    "truncated": c_store_rq(21, MR_STORAGE, "1.2.826.0.1.3680043.8.498.77.7")[:-5],
    "unknown-command-field": command_set([(0x0002, b"1.2.840.10008.5.1.4.1.1.4\x00"), (0x0100, b"\x0f\x0f"),
                                          (0x0110, b"\x16\x00"), (0x0800, b"\x00\x00")]),
    "store-without-data-set": command_set([(0x0002, b"1.2.840.10008.5.1.4.1.1.4\x00"), (0x0100, b"\x01\x00"),
                                           (0x0110, b"\x17\x00"), (0x0700, b"\x00\x00"), (0x0800, b"\x01\x01"),
                                           (0x1000, b"1.2.826.0.1.3680043.8.498.77.8\x00")]),
    "random-bytes": bytes(range(1, 200)),
    "class-not-of-the-context": c_store_rq(24, "1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.8.498.77.9"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_COMMANDS))
def test_broken_command_set_is_refused_at_once(node: ScpNode, tmp_path: Path, name: str) -> None:
    """A failure status, an A-ABORT or a closed connection within a second; never a success, never silence."""
    with RawPeer("127.0.0.1", node.port) as peer:
        peer.associate(CONTEXTS)
        t0 = time.monotonic()
        peer.send_command(3, BROKEN_COMMANDS[name])
        with contextlib.suppress(ConnectionError):
            peer.send_dataset(3, _dataset("1.2.826.0.1.3680043.8.498.77.10"))
        try:
            rsp = peer.read_response(timeout=3.0)
        except ConnectionError:  # aborted or closed
            rsp = None
        assert time.monotonic() - t0 < 1.0, f"refused after {time.monotonic() - t0:.1f} s"
        if rsp is not None:
            assert rsp.status not in (None, 0x0000), f"answered 0x{rsp.command:04X} with status {rsp.status}"
    assert node.store.count_instances() == 0
    assert_still_serves(node, tmp_path)


# unknown-command-field, store-without-data-set and random-bytes logged a pynetdicom traceback
# until the command sets were checked before pynetdicom sees them (netguard).
MALFORMED_FOR_LOGS = [
    pytest.param(c_store_rq(5, MR_STORAGE, None), id="no-sop-instance"),
    pytest.param(c_store_rq(5, MR_STORAGE, ""), id="empty-sop-instance"),
    *(pytest.param(BROKEN_COMMANDS[name], id=name) for name in sorted(BROKEN_COMMANDS)),
]


@pytest.mark.parametrize("fast_reactor", [True, False], ids=["fast", "pynetdicom"])
@pytest.mark.parametrize("command", MALFORMED_FOR_LOGS)
def test_malformed_command_leaves_no_traceback_in_the_log(
    node_factory: NodeFactory, caplog: pytest.LogCaptureFixture, fast_reactor: bool, command: bytes,
) -> None:
    """Issue 15: a malformed C-STORE is logged as one line and counted, without a traceback.

    At the node's log levels (pynetdicom from WARNING up, :mod:`dicom_node.logs`): at DEBUG,
    pynetdicom's own message dump raises on a command without an Affected SOP Instance UID.
    """
    node = node_factory(fast_reactor=fast_reactor)
    caplog.set_level(logging.WARNING)
    caplog.set_level(logging.WARNING, logger="pynetdicom")
    with RawPeer("127.0.0.1", node.port) as peer:
        peer.associate(CONTEXTS)
        peer.send_command(3, command)
        with contextlib.suppress(ConnectionError, TimeoutError):
            peer.send_dataset(3, _dataset("1.2.826.0.1.3680043.8.498.77.11"))
            peer.read_response(timeout=1.0)
    time.sleep(0.2)  # the association's thread finishes logging
    with_traceback = [f"{r.name}: {r.getMessage()[:100]}" for r in caplog.records if r.exc_info or r.exc_text]
    assert not with_traceback, with_traceback


def test_store_on_the_verification_context_is_refused(node: ScpNode, tmp_path: Path) -> None:
    sop = "1.2.826.0.1.3680043.8.498.77.4"
    with RawPeer("127.0.0.1", node.port) as peer:
        peer.associate(CONTEXTS)
        peer.send_command(1, c_store_rq(7, MR_STORAGE, sop))
        peer.send_dataset(1, _dataset(sop, implicit=True))  # in the Verification context's transfer syntax
        try:
            rsp = peer.read_response(timeout=3.0)
        except ConnectionError:  # A-ABORT or closed: a refusal too
            rsp = None
        if rsp is not None:
            assert rsp.command == 0x8001, f"answered with command 0x{rsp.command:04X}"
            assert rsp.status not in (None, 0x0000)
    assert node.store.count_instances() == 0
    assert_still_serves(node, tmp_path)


@pytest.mark.parametrize("how", ["abort", "close"])
def test_transfer_cut_in_the_middle_stores_nothing(node: ScpNode, tmp_path: Path, how: str) -> None:
    sop = "1.2.826.0.1.3680043.8.498.77.5"
    data = _dataset(sop)
    with RawPeer("127.0.0.1", node.port) as peer:
        peer.associate(CONTEXTS)
        peer.send_command(3, c_store_rq(9, MR_STORAGE, sop))
        peer.send_dataset(3, data[: len(data) // 2], fragment=200, last=False)
        if how == "abort":
            peer.abort()
        else:
            peer.close()
    time.sleep(0.3)
    assert node.store.count_instances() == 0
    assert_still_serves(node, tmp_path)


def test_a_good_store_after_the_scenarios_is_acknowledged_and_kept(node: ScpNode, tmp_path: Path) -> None:
    """The raw peer itself, well-behaved: its acknowledged instance is on disk (the check works)."""
    sop = "1.2.826.0.1.3680043.8.498.77.6"
    with RawPeer("127.0.0.1", node.port) as peer:
        peer.associate(CONTEXTS)
        peer.send_command(3, c_store_rq(11, MR_STORAGE, sop))
        peer.send_dataset(3, _dataset(sop), fragment=1000)
        rsp = peer.read_response(timeout=5.0)
        assert (rsp.command, rsp.status) == (0x8001, 0x0000)
        assert peer.release()
    assert_still_serves(node, tmp_path, acknowledged=(sop,))


# --------------------------------------------------------------------------- fuzzed PDUs
_PREFIX = "1.2.826.0.1.3680043.8.498.78."
_DATASETS: dict[str, bytes] = {}
#: SOP Instance UIDs the node answered success for during the fuzzed streams.
ACKNOWLEDGED: list[str] = []


def _fuzz_dataset(sop: str) -> bytes:
    """The MR dataset with this SOP Instance UID (all fuzz UIDs have the same length)."""
    if "template" not in _DATASETS:
        _DATASETS["template"] = _dataset(_PREFIX + "100000")
    return _DATASETS["template"].replace((_PREFIX + "100000").encode(), sop.encode())


@st.composite
def pdu_streams(draw: Any) -> tuple[bool, bytes]:
    """Whether to associate first, and a damaged stream of PDUs to send."""
    sop = _PREFIX + str(draw(st.integers(100001, 999999)))
    pieces = [
        p_data([(1, 0x03, c_echo_rq(1))]),
        p_data([(3, 0x03, c_store_rq(2, MR_STORAGE, sop))]),
        p_data([(3, 0x02, _fuzz_dataset(sop))]),
        a_associate_rq(CONTEXTS),
        struct.pack(">BBI", draw(st.integers(0, 9)), 0, draw(st.integers(0, 0xFFFFFFFF))),
    ]
    chosen = draw(st.lists(st.sampled_from(range(len(pieces))), min_size=1, max_size=5))
    stream = b"".join(pieces[i] for i in chosen)
    return draw(st.booleans()), draw(byte_mutations(stream, max_ops=3))


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScpNode]:
    """One node for all the fuzzed PDU streams."""
    cfg = make_config(tmp_path_factory.mktemp("fuzz-node"), **NODE_OPTIONS)
    store, metrics = Store(cfg.db_path), NodeMetrics()
    node = ScpNode(cfg, store, Spool(cfg.spool_dir), metrics, AuditLog(cfg.audit_log_path),
                   StoreSCP(cfg, store, Spool(cfg.spool_dir), metrics, AuditLog(cfg.audit_log_path)))
    node.scp.start()
    try:
        yield node
    finally:
        node.scp.stop(grace_s=2)
        store.close()


@fuzz_settings(max_examples=25, deadline_ms=10_000)
@given(pdu_streams())
def test_fuzzed_pdu_streams(fuzz_node: ScpNode, case: tuple[bool, bytes]) -> None:
    associate, stream = case
    with RawPeer("127.0.0.1", fuzz_node.port) as peer:
        try:
            if associate:
                peer.associate(CONTEXTS)
            peer.send(stream)
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:  # read what comes back for a moment
                rsp = peer.read_response(max(0.01, deadline - time.monotonic()))
                if rsp.command == 0x8001 and rsp.status == 0x0000:
                    ACKNOWLEDGED.append(rsp.values.get(0x1000, b"").rstrip(b"\x00").decode("ascii", "replace"))
        except (ConnectionError, TimeoutError, ValueError, struct.error):
            pass


def test_node_serves_after_the_fuzzed_pdu_streams(fuzz_node: ScpNode, tmp_path: Path) -> None:
    assert_still_serves(fuzz_node, tmp_path, acknowledged=tuple(ACKNOWLEDGED))
