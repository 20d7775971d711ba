"""The fast path: its response encoder matches pynetdicom's byte for byte, and its reactor really runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode

from dicom_node.fastpath import encode_response_command
from tests.support.mrfiles import write_mr_series


@pytest.mark.parametrize("uid", ["1.2.3.4", "1.2.840.113619.2.55.3.604688119.969.1268071029.320"])
def test_c_store_response_encoding_matches_pynetdicom(uid: str) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    rsp.AffectedSOPInstanceUID = uid
    rsp.Status = 0x0000
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    expected = encode(msg.command_set, True, True)
    assert encode_response_command(0x8001, 7, 0, "1.2.840.10008.5.1.4.1.1.4", uid) == expected


def test_c_echo_response_encoding_matches_pynetdicom() -> None:
    rsp = C_ECHO()
    rsp.MessageIDBeingRespondedTo = 65535
    rsp.AffectedSOPClassUID = "1.2.840.10008.1.1"
    rsp.Status = 0x0000
    msg = C_ECHO_RSP()
    msg.primitive_to_message(rsp)
    expected = encode(msg.command_set, True, True)
    assert encode_response_command(0x8030, 65535, 0, "1.2.840.10008.1.1", None) == expected


@pytest.mark.parametrize("fast_reactor", [True, False])
def test_c_store_is_served_inside_the_event_driven_reactor(tmp_path: Path, fast_reactor: bool) -> None:
    """With ``fast_reactor`` the association's DUL thread runs :func:`dicom_node.fastpath._dul_reactor`
    (not pynetdicom's 1 ms polling loop) and serves each C-STORE in that thread; without it,
    pynetdicom's own loops run. The handler looks at its own call stack."""
    from dicom_node import fastpath
    from dicom_node.audit import AuditLog
    from dicom_node.metrics import NodeMetrics
    from dicom_node.scp import StoreSCP
    from dicom_node.spool import Spool
    from dicom_node.store import Store
    from tests.dicom_node.conftest import make_config

    cfg = make_config(tmp_path, fast_reactor=fast_reactor)
    store, metrics = Store(cfg.db_path), NodeMetrics()
    scp = StoreSCP(cfg, store, Spool(cfg.spool_dir), metrics, AuditLog(cfg.audit_log_path))
    seen: list[tuple[bool, str]] = []
    original = scp._store_stream

    def spy(*args: Any) -> Any:
        frame = sys._getframe()
        codes = set()
        while frame is not None:
            codes.add(frame.f_code)
            frame = frame.f_back  # type: ignore[assignment]
        seen.append((fastpath._dul_reactor.__code__ in codes, threading.current_thread().name))
        return original(*args)

    scp._store_stream = spy  # type: ignore[method-assign,assignment]
    scp.start()
    try:
        _, paths = write_mr_series(tmp_path / "in", 3)
        r = subprocess.run(["storescu", "-aec", "MRINODE", "127.0.0.1", str(scp.port), *map(str, paths)],
                           capture_output=True, text=True, env=dict(os.environ, TCP_NODELAY="1"), timeout=60,
                           check=False)
        assert r.returncode == 0, r.stderr
    finally:
        scp.stop(grace_s=5)
        store.close()
    assert len(seen) == 3
    assert all(in_reactor == fast_reactor for in_reactor, _ in seen), seen
    reopened = Store(cfg.db_path)
    try:
        assert reopened.count_instances() == 3
    finally:
        reopened.close()


def test_idle_association_is_aborted_after_the_network_timeout(tmp_path: Path) -> None:
    """The event-driven reactor still runs pynetdicom's idle timer: a silent peer is aborted."""
    import time

    from pynetdicom import AE

    from dicom_node.audit import AuditLog
    from dicom_node.metrics import NodeMetrics
    from dicom_node.scp import StoreSCP
    from dicom_node.spool import Spool
    from dicom_node.store import Store
    from tests.dicom_node.conftest import make_config

    cfg = make_config(tmp_path, network_timeout_s=1.0)
    store, metrics = Store(cfg.db_path), NodeMetrics()
    scp = StoreSCP(cfg, store, Spool(cfg.spool_dir), metrics, AuditLog(cfg.audit_log_path))
    scp.start()
    try:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="MRINODE")
        assert assoc.is_established
        deadline = time.monotonic() + 20
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert assoc.is_aborted, "the node did not abort an association silent for longer than network_timeout_s"
    finally:
        scp.stop(grace_s=5)
        store.close()
