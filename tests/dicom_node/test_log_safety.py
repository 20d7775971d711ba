"""Logs that cannot be forged or leak: every logger, every value, every exception.

Each case runs in a child process that calls :func:`dicom_node.logs.configure_logging`
(as ``mrinode`` does) or the worker's entry point, and its stderr is scanned with
:mod:`tests.support.logscan`: no control character, no raw UID, no line that is not a
record or a continuation of one.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dicom_node.logs import CONTINUATION, LOG_FORMAT, SafeFormatter, scrub, uid_tag
from tests.dicom_node.conftest import ScpNode
from tests.support.logscan import RECORD_START, log_problems
from tests.support.mrfiles import write_mr_series

LONG_UID = "1.2.826.0.1.3680043.8.498." + "1234567890." * 12 + "7"  # 159 characters
NUL_UID = "1.2.826.0.1.3680043.8.498.55\x00.66.77"
FORGE = "1.2.826.0.1.3680043.8.498.99\nFAKE LOG LINE INFO dicom_node: injected"
FORGE_TS = "x\r\n2026-01-01 00:00:00,000 INFO dicom_node.scp: forged record"
PLANTED = ("1.2.826.0.1.3680043.8.498.", "1234567890.1234567890", "3680043.8.498.55", "498.99")


def _child(code: str, *, env: dict[str, str] | None = None) -> str:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                       check=False, env=env, errors="backslashreplace")
    assert r.stdout == "", r.stdout
    return r.stderr


def test_scrub_hashes_uids_and_escapes_controls() -> None:
    assert scrub(f"stored {LONG_UID}") == f"stored {uid_tag(LONG_UID)}"
    assert scrub(NUL_UID) == uid_tag(NUL_UID)
    assert scrub(FORGE) == uid_tag("1.2.826.0.1.3680043.8.498.99") + "\\nFAKE LOG LINE INFO dicom_node: injected"
    assert scrub("\x1b[2J\x00\x07\x7f\x85\u2028\u202e") == "\\x1b[2J\\x00\\x07\\x7f\\x85\\u2028\\u202e"
    # Standard UIDs, IPv4 addresses, versions and decimals are not identifiers.
    kept = "MR 1.2.840.10008.5.1.4.1.1.4 on 1.2.840.10008.1.2.1 from 127.0.0.1, highdicom 0.28.2, 1.5 s"
    assert scrub(kept) == kept
    # ... but a standard-looking UID that is too long, or carries junk, is hashed.
    assert "1.2.840.10008" not in scrub("1.2.840.10008.5.1.4.1.1.4." + "9" * 60)
    assert "1.2.840.10008" not in scrub("1.2.840.10008.5.1.4\x00.1.1.4")
    assert scrub(scrub(FORGE + LONG_UID)) == scrub(FORGE + LONG_UID)


def test_every_logger_is_scrubbed() -> None:
    err = _child(f"""
        import logging, warnings
        from dicom_node.logs import configure_logging
        configure_logging("DEBUG")
        LONG, NUL, FORGE, FORGE_TS = {LONG_UID!r}, {NUL_UID!r}, {FORGE!r}, {FORGE_TS!r}
        for name in ("dicom_node.scp", "dicom_node.fastpath", "highdicom.seg.sop", "pydicom", "pynetdicom.assoc",
                     "uvicorn.error", "some.library"):
            lg = logging.getLogger(name)
            lg.warning("C-STORE from %s: SOP Instance %s, Study %s", FORGE, LONG, NUL)
            lg.error("0xA900: SOP class %s is not the context's; %s", LONG + "\\x1b[31m", FORGE_TS)
            lg.error(FORGE + " %s", "no args fit %d")
            try:
                raise ValueError("bad UID " + FORGE + " " + LONG)
            except ValueError:
                lg.exception("failed on %s", NUL)
            lg.warning("stack of %s", LONG, stack_info=True)
        logging.getLogger("dicom_node").info("%d %d", 1)
        logging.getLogger("highdicom.seg.sop").info("SOP Instance UID %s", LONG)
        warnings.warn("Invalid value for VR UI: " + repr(LONG))
    """)
    assert "FAKE LOG LINE" in err and "forged record" in err
    assert log_problems(err, PLANTED) == []
    assert all(RECORD_START.match(x) or x.startswith(CONTINUATION) for x in err.splitlines())
    assert "unformattable log message '%d %d'" in err
    assert "Traceback (most recent call last):" in err and "uid:" in err
    assert "highdicom.seg.sop: SOP Instance UID" not in err  # highdicom's INFO lines are dropped
    assert "py.warnings" in err


def test_uncaught_exceptions_in_threads_and_main_go_through_the_formatter() -> None:
    err = _child(f"""
        import threading
        from dicom_node.logs import configure_logging
        configure_logging("INFO")
        def boom():
            raise RuntimeError("thread saw " + {FORGE!r})
        t = threading.Thread(target=boom, name="scp-1"); t.start(); t.join()
        raise KeyError({LONG_UID!r})
    """)
    assert "uncaught RuntimeError in thread scp-1" in err and "uncaught KeyError" in err
    assert log_problems(err, PLANTED) == []


def test_uvicorn_handlers_are_scrubbed_too() -> None:
    """uvicorn replaces its loggers' handlers from its own log_config after ours."""
    err = _child(f"""
        import logging
        from dicom_node.logs import configure_logging
        configure_logging("INFO")
        import uvicorn
        uvicorn.Config(lambda scope, receive, send: None, log_level="warning").configure_logging()
        assert logging.getLogger("uvicorn").handlers, "uvicorn installed no handler"
        try:
            raise ValueError({FORGE!r})
        except ValueError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application %s", {LONG_UID!r})
        logging.getLogger("uvicorn").error("%s", {FORGE_TS!r})
    """)
    assert "Exception in ASGI application" in err and "forged record" in err
    assert log_problems(err, PLANTED, structured=False) == []
    for line in err.splitlines():
        assert line.startswith(("ERROR:", CONTINUATION)), line


def test_worker_log_has_no_raw_uid(tmp_path: Path) -> None:
    """A job's worker.log (the child's stderr): highdicom's lines, warnings and a failure."""
    study_uid, paths = write_mr_series(tmp_path / "in", 4)
    spec = {"job_id": 1, "study_uid": study_uid, "instance_paths": [str(p) for p in paths],
            "out_dir": str(tmp_path / "out"), "device": "cpu",
            "pipelines": [{"name": "seg", "function": "dicom_node.pipelines.testing:run", "options": {}}]}
    (tmp_path / "out").mkdir()
    env = dict(os.environ, PYTHONWARNINGS="always")
    r = subprocess.run([sys.executable, "-m", "dicom_node.worker"], input=json.dumps(spec), capture_output=True,
                       text=True, timeout=300, check=False, env=env)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    from pydicom import dcmread

    seg = dcmread(result["outputs"][0], stop_before_pixels=True)
    inputs = [dcmread(p, stop_before_pixels=True) for p in paths]
    uids = {study_uid, seg.SOPInstanceUID, seg.SeriesInstanceUID, *(d.SOPInstanceUID for d in inputs),
            inputs[0].SeriesInstanceUID, inputs[0].FrameOfReferenceUID}
    assert log_problems(r.stderr + r.stdout, [*uids, "PHANTOM01", "Phantom"]) == []

    # A pipeline that fails with a UID in its message: the traceback is scrubbed too.
    spec["pipelines"] = [{"name": "bad", "function": "dicom_node.pipelines.testing:run",
                          "options": {"fail": "exception"}}]
    failed = subprocess.run([sys.executable, "-m", "dicom_node.worker"], input=json.dumps(spec),
                            capture_output=True, text=True, timeout=300, check=False, env=env)
    assert failed.returncode != 0 and "test pipeline asked to fail" in failed.stderr
    assert log_problems(failed.stderr, [*uids]) == []


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_pynetdicom_and_pydicom_at_any_level(tmp_path: Path, level: str) -> None:
    """Reading and echoing with the libraries themselves: their own lines are scrubbed."""
    study_uid, paths = write_mr_series(tmp_path / "in", 1)
    err = _child(f"""
        import logging
        from dicom_node.logs import configure_logging
        configure_logging({level!r})
        for name in ("pydicom", "pynetdicom"):
            logging.getLogger(name).setLevel(logging.DEBUG)   # as loud as they can be
        from pydicom import dcmread
        ds = dcmread({str(paths[0])!r})
        ds.SOPInstanceUID = {LONG_UID!r}
        logging.getLogger("pydicom").debug("dataset %s", ds)
        from pynetdicom import AE
        ae = AE()
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", 9, ae_title="NOBODY")   # refused: nothing listens
        assert not assoc.is_established
    """)
    assert log_problems(err, [study_uid, LONG_UID, "PHANTOM01", "Phantom"]) == []


# --- the real SCP, driven by a raw peer with hostile UIDs --------------------------------

MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _associate_rq(calling: str, called: str) -> bytes:
    ctx = bytes([1, 0, 0, 0]) + _item(0x30, MR.encode()) + _item(0x40, EXPLICIT_LE.encode())
    body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16) + bytes(32)
            + _item(0x10, b"1.2.840.10008.3.1.1.1") + _item(0x20, ctx)
            + _item(0x50, _item(0x51, struct.pack(">I", 1 << 20))))
    return struct.pack(">BBI", 1, 0, len(body)) + body


def _element(tag: int, value: bytes) -> bytes:
    """An implicit VR little endian element of group 0000 (even length)."""
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", 0, tag, len(value)) + value


def _store_command(sop_class: str, sop_uid: bytes, message_id: int) -> bytes:
    body = (_element(0x0002, sop_class.encode()) + _element(0x0100, struct.pack("<H", 1))
            + _element(0x0110, struct.pack("<H", message_id)) + _element(0x0700, struct.pack("<H", 2))
            + _element(0x0800, struct.pack("<H", 0)) + _element(0x1000, sop_uid))
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _pdata(ctrl: int, fragment: bytes) -> bytes:
    pdv = struct.pack(">IBB", 2 + len(fragment), 1, ctrl) + fragment
    return struct.pack(">BBI", 4, 0, len(pdv)) + pdv


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 6:
        chunk = sock.recv(6 - len(head))
        if not chunk:
            return 0, b""
        head += chunk
    kind, _, length = struct.unpack(">BBI", head)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return kind, body


def _hostile_stores(port: int, stores: list[tuple[str, bytes, bytes]]) -> int:
    """One association sending ``(sop_class, command sop uid, dataset)``; returns the number of answers."""
    answered = 0
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(_associate_rq("TESTSCU", "MRINODE"))
        assert _read_pdu(s)[0] == 2, "association not accepted"
        for n, (sop_class, sop_uid, data) in enumerate(stores, 1):
            s.sendall(_pdata(0x03, _store_command(sop_class, sop_uid, n)) + _pdata(0x02, data))
            try:
                kind, _ = _read_pdu(s)
            except TimeoutError:
                continue
            if kind != 4:
                break  # aborted: later stores go on a new association
            answered += 1
        s.sendall(struct.pack(">BBI", 5, 0, 4) + bytes(4))
        with contextlib.suppress(OSError):
            _read_pdu(s)
    return answered


def _dataset(sop_class: str, sop_uid: str, study_uid: str) -> bytes:
    """An explicit VR little endian MR data set with these (non-conformant) UIDs."""
    from pydicom import config
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from tests.support.mrfiles import make_mr_dataset

    saved = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = config.IGNORE
    try:
        ds = make_mr_dataset(study_uid="1.2.3", series_uid="1.2.3.1", instance_number=1, size=8)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID = sop_class, sop_uid, study_uid
        ds.SeriesInstanceUID = study_uid + ".1"
        del ds.file_meta
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = True, False
        write_dataset(out, ds)
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = saved
    return out.getvalue()


def test_the_scp_logs_hostile_uids_safely(scp_node: ScpNode) -> None:
    """C-STOREs whose UIDs carry newlines, NULs, ESC or 160 characters, and a private SOP class."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter(LOG_FORMAT))
    root = logging.getLogger()
    saved = root.level, {n: logging.getLogger(n).level for n in ("pynetdicom", "dicom_node")}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in saved[1]:
        logging.getLogger(name).setLevel(logging.DEBUG)  # pynetdicom as loud as it gets, too
    private_class = "1.2.826.0.1.3680043.8.498.777.1"
    esc_uid = "1.2.826.0.1.3680043.8.498.31\x1b[2J.4"
    cases = [
        (MR, FORGE.encode(), _dataset(MR, FORGE, FORGE + ".0")),
        (MR, LONG_UID.encode(), _dataset(MR, LONG_UID, LONG_UID)),
        (MR, NUL_UID.encode(), _dataset(MR, NUL_UID, NUL_UID)),
        (MR, esc_uid.encode(), _dataset(MR, esc_uid, esc_uid)),
        (MR, b"1.2.826.0.1.3680043.8.498.88", _dataset(private_class, "1.2.826.0.1.3680043.8.498.88",
                                                        "1.2.826.0.1.3680043.8.498.89")),
        (MR, b"1.2.826.0.1.3680043.8.498.90", _dataset(MR, "1.2.826.0.1.3680043.8.498.91",
                                                        "1.2.826.0.1.3680043.8.498.92")),
        (MR, b"", _dataset(MR, "1.2.826.0.1.3680043.8.498.93\n", "1.2.826.0.1.3680043.8.498.94")),
    ]
    try:
        answered = sum(_hostile_stores(scp_node.port, [c]) for c in cases)
        time.sleep(0.5)
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)
    text = stream.getvalue()
    assert answered >= 5 and "C-STORE" in text
    planted = [*PLANTED, private_class, "3680043.8.498.88", "3680043.8.498.9"]
    assert log_problems(text, planted) == []
    assert "FAKE LOG LINE" not in text or all(
        RECORD_START.match(x) for x in text.splitlines() if "FAKE LOG LINE" in x)
