"""``fastpath.install``: all patches or none, checked against the pynetdicom release it was written for."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider

from dicom_node import fastpath
from tests.dicom_node.conftest import ScpNode
from tests.support.mrfiles import write_mr_series

ENV = dict(os.environ, TCP_NODELAY="1")


@pytest.fixture(autouse=True)
def _fresh_check() -> Iterator[None]:
    fastpath._forget_check()
    yield
    fastpath._forget_check()  # the next test module sees the real pynetdicom again


def _snapshot(assoc: Any) -> dict[str, Any]:
    """What the patches would change: the instance dictionaries and the queues' ``put``."""
    return {
        "assoc": dict(vars(assoc)),
        "dul": dict(vars(assoc.dul)),
        "dimse": dict(vars(assoc.dimse)),
        "queues": [vars(q).get("put") for q in (assoc.dul.to_provider_queue, assoc.dul.to_user_queue,
                                                assoc.dimse.msg_queue)],
    }


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "dicom_node.fastpath" and r.levelno == logging.WARNING]


def test_supported_release_installs_every_patch() -> None:
    assoc = Association(AE(), "acceptor")
    assert fastpath.unsupported() is None
    assert fastpath.install(assoc) is True
    assert "run_reactor" in vars(assoc.dul) and "_run_reactor" in vars(assoc) and "send_msg" in vars(assoc.dimse)
    assert vars(assoc.dimse.msg_queue).get("put") is not None
    dul: Any = assoc.dul
    dul._mrinode_wake_r.close()
    dul._mrinode_wake_w.close()


@pytest.mark.parametrize(("cls", "attr"), [
    (DULServiceProvider, "_process_recv_primitive"),
    (DULServiceProvider, "_is_transport_event"),
    (Association, "_run_reactor"),
    (Association, "_serve_request"),
    (DIMSEServiceProvider, "send_msg"),
])
def test_missing_private_attribute_installs_nothing_and_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, cls: type, attr: str
) -> None:
    assoc = Association(AE(), "acceptor")  # built before the attribute goes: only the class lacks it
    monkeypatch.delattr(cls, attr)
    before = _snapshot(assoc)
    with caplog.at_level(logging.WARNING, logger="dicom_node.fastpath"):
        assert fastpath.install(assoc) is False
        assert fastpath.install(Association(AE(), "acceptor")) is False
    assert _snapshot(assoc) == before
    warned = _warnings(caplog)
    assert len(warned) == 1, warned
    assert f"{cls.__name__}.{attr}" in warned[0]


def test_missing_instance_attribute_installs_nothing(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    assoc = Association(AE(), "acceptor")
    del assoc._reactor_checkpoint
    before = _snapshot(assoc)
    with caplog.at_level(logging.WARNING, logger="dicom_node.fastpath"):
        assert fastpath.install(assoc) is False
    assert _snapshot(assoc) == before
    assert "assoc._reactor_checkpoint" in _warnings(caplog)[0]


def test_other_release_installs_nothing(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    assoc = Association(AE(), "acceptor")
    before = _snapshot(assoc)
    with caplog.at_level(logging.WARNING, logger="dicom_node.fastpath"):
        assert fastpath.install(assoc) is False
    assert _snapshot(assoc) == before
    assert "pynetdicom 3.1.0 is installed" in _warnings(caplog)[0]


def _rename_run_reactor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pynetdicom whose association reactor is no longer a class attribute called ``_run_reactor``.

    Instances still find it (plain pynetdicom keeps working), the class does not: what a
    release that moved the method would look like to :func:`fastpath.unsupported`.
    """
    original = Association._run_reactor
    monkeypatch.delattr(Association, "_run_reactor")

    def find_moved(self: Association, name: str) -> Any:
        if name == "_run_reactor":
            return original.__get__(self)
        raise AttributeError(name)

    monkeypatch.setattr(Association, "__getattr__", find_moved, raising=False)


def test_fallback_serves_c_store(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                 scp_node: ScpNode, tmp_path: Path) -> None:
    assert scp_node.cfg.dicom.fast_reactor
    _rename_run_reactor(monkeypatch)
    seen: list[tuple[Any, bool]] = []
    install = fastpath.install

    def recording_install(assoc: Any) -> bool:
        done = install(assoc)
        seen.append((assoc, done))
        return done

    monkeypatch.setattr(fastpath, "install", recording_install)
    study_uid, _ = write_mr_series(tmp_path / "in", 4)
    with caplog.at_level(logging.WARNING, logger="dicom_node.fastpath"):
        for _ in range(2):  # two associations, one warning
            r = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(scp_node.port),
                                str(tmp_path / "in")], capture_output=True, text=True, env=ENV, timeout=120,
                               check=False)
            assert r.returncode == 0, r.stderr
    assert len(scp_node.store.instance_paths(study_uid)) == 4
    assert scp_node.metric("mrinode_instances_received_total") == 8
    assert len(seen) == 2 and not any(done for _, done in seen)
    for assoc, _ in seen:  # plain pynetdicom served it: none of the patches is on the association
        assert "run_reactor" not in vars(assoc.dul) and "send_msg" not in vars(assoc.dimse)
        assert "_run_reactor" not in vars(assoc)
    warned = _warnings(caplog)
    assert len(warned) == 1 and "Association._run_reactor" in warned[0], warned


@pytest.mark.parametrize("fast_reactor", [True, False], ids=["fast", "pynetdicom"])
def test_the_receive_guards_refuse_to_start_without_what_they_patch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_reactor: bool) -> None:
    """netguard has no fallback (without it one bad peer can take the node off the air): a
    pynetdicom lacking what it replaces stops the SCP before it listens, with a sentence."""
    from dicom_node.audit import AuditLog
    from dicom_node.metrics import NodeMetrics
    from dicom_node.scp import StoreSCP
    from dicom_node.spool import Spool
    from dicom_node.store import Store
    from tests.dicom_node.conftest import make_config

    monkeypatch.delattr(DULServiceProvider, "_read_pdu_data")
    cfg = make_config(tmp_path, fast_reactor=fast_reactor)
    store = Store(cfg.db_path)
    scp = StoreSCP(cfg, store, Spool(cfg.spool_dir), NodeMetrics(), AuditLog(cfg.audit_log_path))
    with pytest.raises(OSError, match=r"cannot serve DICOM safely: .*_read_pdu_data"):
        scp.start()
    assert scp._server is None
    store.close()
