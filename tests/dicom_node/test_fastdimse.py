"""Direct C-STORE reception: the command reader against pynetdicom's encoder, and the SCP
serving real associations through it or, where it must, through pynetdicom."""

from __future__ import annotations

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
