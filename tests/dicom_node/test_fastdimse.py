"""Direct C-STORE reception: the command reader against pynetdicom's encoder, and the SCP
serving real associations through it or, where it must, through pynetdicom."""

from __future__ import annotations

import logging
import queue
import struct
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE, _config
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode

from dicom_node.fastdimse import StoreRequest, parse_store_command
from tests.dicom_node.conftest import ScpNode
from tests.support.mrfiles import write_mr_series

SOP = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"


def _store_rq(move_ae: str | None = None) -> bytes:
    rq = C_STORE()
    rq.MessageID = 41
    rq.AffectedSOPClassUID = MRImageStorage
    rq.AffectedSOPInstanceUID = SOP
    rq.Priority = 2
    rq.DataSet = BytesIO(b"\x08\x00\x18\x00")  # makes CommandDataSetType "present"
    if move_ae:
        rq.MoveOriginatorApplicationEntityTitle = move_ae
        rq.MoveOriginatorMessageID = 3
    msg = C_STORE_RQ()
    msg.primitive_to_message(rq)
    raw = encode(msg.command_set, True, True)
    assert raw is not None
    return raw


@pytest.mark.parametrize("move_ae", [None, "ORTHANC"])
def test_reads_pynetdicoms_c_store_request(move_ae: str | None) -> None:
    assert parse_store_command(_store_rq(move_ae)) == StoreRequest(41, MRImageStorage, SOP)


def test_leaves_everything_else_to_pynetdicom() -> None:
    raw = _store_rq()
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    msg = C_ECHO_RQ()
    msg.primitive_to_message(echo)
    echo_raw = encode(msg.command_set, True, True)
    assert echo_raw is not None and parse_store_command(echo_raw) is None  # not a C-STORE
    assert parse_store_command(raw[:-3]) is None  # truncated
    assert parse_store_command(raw + struct.pack("<HHIH", 0, 0x1100, 2, 7)) is None  # group length and extra element
    no_data = raw.replace(struct.pack("<HHIH", 0, 0x0800, 2, 0x0001), struct.pack("<HHIH", 0, 0x0800, 2, 0x0101))
    assert no_data != raw and parse_store_command(no_data) is None  # no data set
    assert parse_store_command(b"") is None


def _send(port: int, files: list[Path]) -> list[tuple[int, str | None]]:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="MRINODE")
    assert assoc.is_established
    out = []
    try:
        for f in files:
            st = assoc.send_c_store(f)
            out.append((int(st.Status), st.get("ErrorComment")))
    finally:
        assoc.release()
    return out


@pytest.mark.parametrize("pynetdicom_path", [False, True])
def test_stores_and_failures_on_either_path(scp_node: ScpNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            pynetdicom_path: bool) -> None:
    """pynetdicom's unrestricted-storage mode is one the direct reader leaves to pynetdicom:
    the same association then goes through ``EVT_C_STORE``, with the same statuses and comments."""
    calls: dict[str, int] = {"all": 0, "direct": 0}
    scp = scp_node.scp
    store_stream, direct = scp._store_stream, scp._on_store_stream

    def count_all(*args: Any) -> Any:
        calls["all"] += 1
        return store_stream(*args)

    def count_direct(*args: Any) -> Any:
        calls["direct"] += 1
        return direct(*args)

    # Both looked up per association / per request, so patching the started SCP works.
    monkeypatch.setattr(scp, "_store_stream", count_all)
    monkeypatch.setattr(scp, "_on_store_stream", count_direct)
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # the SCU sends file bytes as they are
    if pynetdicom_path:
        monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", True)
    study_uid, paths = write_mr_series(tmp_path / "in", 3)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(paths[1].read_bytes()[:-50])  # truncated pixel data
    results = _send(scp_node.port, [paths[0], bad, paths[1], paths[2], paths[0]])
    assert [s for s, _ in results] == [0x0000, 0xC000, 0x0000, 0x0000, 0x0000]
    assert results[0][1] is None
    assert results[1][1] is not None and results[1][1].startswith("Cannot understand")
    assert len(scp_node.store.instance_paths(study_uid)) == 3
    assert len(list(scp_node.cfg.spool_dir.rglob("*.dcm"))) == 3
    assert calls["all"] == 5
    assert calls["direct"] == (0 if pynetdicom_path else 5)


def _pdata_tf(pdvs: list[tuple[int, int, bytes]]) -> bytes:
    """A P-DATA-TF PDU carrying ``(context_id, control_header, fragment)`` items, built by hand."""
    items = b"".join(struct.pack(">IBB", 2 + len(frag), cx, ctrl) + frag for cx, ctrl, frag in pdvs)
    return struct.pack(">BBI", 0x04, 0x00, len(items)) + items


def _echo_rq() -> bytes:
    echo = C_ECHO()
    echo.MessageID = 42
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    msg = C_ECHO_RQ()
    msg.primitive_to_message(echo)
    raw = encode(msg.command_set, True, True)
    assert raw is not None
    return raw


def _dataset_bytes(path: Path) -> tuple[str, bytes]:
    import io

    import pydicom
    from pydicom.filereader import read_preamble

    fp = io.BytesIO(path.read_bytes())
    read_preamble(fp, False)
    meta = pydicom.filereader._read_file_meta_info(fp)
    return str(meta.MediaStorageSOPInstanceUID), fp.read()


def _store_cmd(sop_uid: str, message_id: int) -> bytes:
    rq = C_STORE()
    rq.MessageID = message_id
    rq.AffectedSOPClassUID = MRImageStorage
    rq.AffectedSOPInstanceUID = sop_uid
    rq.Priority = 2
    rq.DataSet = BytesIO(b"\x08\x00\x18\x00")
    msg = C_STORE_RQ()
    msg.primitive_to_message(rq)
    raw = encode(msg.command_set, True, True)
    assert raw is not None
    return raw


def _inject(port: int, pdvs: list[tuple[str, int, bytes]]) -> tuple[Any, list[Any]]:
    """Associate with pynetdicom, write one hand-made P-DATA-TF PDU on its socket and
    collect the responses that come back (``pdvs`` name their context by abstract syntax)."""
    import time

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="MRINODE")
    assert assoc.is_established
    cx = {str(c.abstract_syntax): int(c.context_id or 0) for c in assoc.accepted_contexts}
    assoc._reactor_checkpoint.clear()  # as pynetdicom's send_* do: keep the responses for us
    while not assoc._is_paused:
        time.sleep(0.001)
    responses: list[Any] = []
    sock: Any = assoc.dul.socket
    try:
        sock.socket.sendall(_pdata_tf([(cx[a], ctrl, frag) for a, ctrl, frag in pdvs]))
        n_expected = sum(1 for _, ctrl, _ in pdvs if ctrl == 0x03)
        deadline = time.monotonic() + 20
        while len(responses) < n_expected and time.monotonic() < deadline:
            try:
                _, rsp = assoc.dimse.msg_queue.get(timeout=0.1)
            except queue.Empty:
                if assoc.acse.is_aborted() or not assoc.is_established:
                    break
                continue
            if rsp is not None:
                responses.append(rsp)
    finally:
        assoc._reactor_checkpoint.set()
    return assoc, responses


def test_one_pdu_with_a_store_then_an_echo(scp_node: ScpNode, tmp_path: Path) -> None:
    """The receiver serves the C-STORE and hands the rest of the same PDU (a C-ECHO) to pynetdicom."""
    study_uid, paths = write_mr_series(tmp_path / "in", 1)
    sop_uid, data = _dataset_bytes(paths[0])
    assoc, responses = _inject(scp_node.port, [
        (MRImageStorage, 0x03, _store_cmd(sop_uid, 7)),
        (MRImageStorage, 0x02, data),
        ("1.2.840.10008.1.1", 0x03, _echo_rq()),
    ])
    try:
        assert [(type(r).__name__, r.MessageIDBeingRespondedTo, r.Status) for r in responses] == [
            ("C_STORE", 7, 0x0000), ("C_ECHO", 42, 0x0000)]
        assert assoc.send_c_echo().Status == 0x0000  # still usable
    finally:
        assoc.release()
    stored = scp_node.store.instance_paths(study_uid)
    assert len(stored) == 1 and _dataset_bytes(stored[0]) == (sop_uid, data)


def test_command_inside_a_data_set_aborts_the_association(scp_node: ScpNode, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    import time

    caplog.set_level(logging.ERROR, logger="dicom_node.fastdimse")
    study_uid, paths = write_mr_series(tmp_path / "in", 1)
    sop_uid, data = _dataset_bytes(paths[0])
    assoc, responses = _inject(scp_node.port, [
        (MRImageStorage, 0x03, _store_cmd(sop_uid, 7)),
        (MRImageStorage, 0x00, data[:100]),  # not the last fragment
        ("1.2.840.10008.1.1", 0x03, _echo_rq()),
    ])
    deadline = time.monotonic() + 20
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert responses == []
    assert assoc.is_aborted
    assert "interrupted by a command" in caplog.text
    assert scp_node.store.instance_paths(study_uid) == []
