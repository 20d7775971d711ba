"""Logs that cannot be forged or leak: every logger, every value, every exception.

Each case runs in a child process that calls :func:`dicom_node.logs.configure_logging`
(as ``mrinode`` does) or the worker's entry point, and its stderr is scanned with
:mod:`tests.support.logscan`: no control character, no raw UID, no line that is not a
record or a continuation of one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dicom_node.logs import CONTINUATION, scrub, uid_tag
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
