"""A full disk: the watermark, no file left by a failed instance, start and serve with the disk full.

The last test is the real thing: ``mrinode serve`` in its own mount namespace on an
8 MiB tmpfs filled to the last byte (``unshare -m``; needs root, as the test suite does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE

from dicom_node.api import create_app
from dicom_node.config import parse_config
from dicom_node.recovery import reindex_unindexed
from dicom_node.service import NodeService
from tests.dicom_node.conftest import ScpNode
from tests.support.mrfiles import write_mr_series
from tests.support.node import NodeProcess
from tests.support.orthanc import free_port

ENV = dict(os.environ, TCP_NODELAY="1")
FULL = "SELECT RAISE(FAIL, 'database or disk is full')"


def _store(port: int, paths: list[Path]) -> list[int]:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="MRINODE")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(p).Status) for p in paths]
    finally:
        assoc.release()


def _echo(port: int) -> int:
    return subprocess.run(["echoscu", "-aec", "MRINODE", "127.0.0.1", str(port)], capture_output=True, env=ENV,
                          timeout=60, check=False).returncode


@pytest.fixture
def low_node(tmp_path: Path) -> Iterator[NodeService]:
    """A started node (no API thread) whose watermark is above any disk's free space."""
    callers = [{"ae_title": a, "host": "127.0.0.1"} for a in ("ECHOSCU", "TESTSCU")]
    cfg = parse_config({
        "node": {"data_dir": str(tmp_path / "var")},
        "dicom": {"host": "127.0.0.1", "port": free_port(), "allowed_callers": callers, "min_free_mb": 1 << 40},
        "api": {"enabled": False, "token": "t"},
    })
    svc = NodeService(cfg)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def test_below_the_watermark_instances_get_out_of_resources_before_anything_is_written(
        low_node: NodeService, tmp_path: Path) -> None:
    _, paths = write_mr_series(tmp_path / "in", 2)
    assert _store(low_node.scp.port, paths) == [0xA700, 0xA700]
    assert _echo(low_node.scp.port) == 0
    assert list(low_node.cfg.spool_dir.iterdir()) == []  # not even a study folder
    assert low_node.store.count_instances() == 0
    with TestClient(create_app(low_node)) as client:
        health = client.get("/health").json()
        assert health["status"] == "degraded" and health["disk_low"] is True
        assert "disk_low" in health["reasons"][0] and health["spool_free_bytes"] > 0
        metrics = client.get("/metrics", headers={"Authorization": "Bearer t"}).text
    assert "mrinode_disk_low 1.0" in metrics and 'mrinode_store_failures_total{status="0xA700"} 2.0' in metrics
    # The connection gauges read the SCP (nothing connected now).
    assert "mrinode_associations_active 0.0" in metrics and "mrinode_connections_pending 0.0" in metrics
    # Space comes back (here: the watermark goes down): accepted again within the check interval.
    low_node.spool.space.min_free_bytes = 0
    time.sleep(1.1)
    assert _store(low_node.scp.port, paths) == [0, 0]
    assert low_node.health()["status"] == "ok"


def test_an_instance_that_cannot_be_indexed_leaves_no_file(scp_node: ScpNode, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    _, paths = write_mr_series(tmp_path / "in", 2)
    assert _store(scp_node.port, paths[:1]) == [0]
    kept = scp_node.store.instance_paths(scp_node.store.studies()[0].study_uid)
    with scp_node.store.transaction() as c:
        c.execute(f"CREATE TRIGGER full BEFORE INSERT ON instances BEGIN {FULL}; END")
    with caplog.at_level(logging.WARNING):
        # A new instance, then the accepted one again: both fail to index.
        assert _store(scp_node.port, [paths[1], paths[0]]) == [0xA700, 0xA700]
    assert not [r for r in caplog.records if r.exc_info]
    # The new one left no file; the earlier accepted copy (its row points there) is kept.
    assert sorted(scp_node.cfg.spool_dir.rglob("*.dcm")) == kept
    with scp_node.store.transaction() as c:
        c.execute("DROP TRIGGER full")
    assert reindex_unindexed(scp_node.store, scp_node.spool) == 0  # the next start indexes nothing
    assert scp_node.store.count_instances() == 1


def test_recovery_that_cannot_write_warns_and_goes_on(scp_node: ScpNode, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    study_uid, paths = write_mr_series(tmp_path / "in", 3)
    assert _store(scp_node.port, paths) == [0, 0, 0]
    stored = scp_node.store.instance_paths(study_uid)
    with scp_node.store.transaction() as c:  # two index rows lost, and the database is full
        c.execute("DELETE FROM instances WHERE path IN (?, ?)", (str(stored[1]), str(stored[2])))
        c.execute(f"CREATE TRIGGER full BEFORE INSERT ON instances BEGIN {FULL}; END")
    with caplog.at_level(logging.WARNING):
        assert reindex_unindexed(scp_node.store, scp_node.spool) == 0
    assert "they stay for the next start" in caplog.text
    assert all(p.exists() for p in stored)
    with scp_node.store.transaction() as c:
        c.execute("DROP TRIGGER full")
    assert reindex_unindexed(scp_node.store, scp_node.spool) == 2  # the next start, with space
    assert sorted(scp_node.store.instance_paths(study_uid)) == sorted(stored)


# ------------------------------------------------------------------ the real full disk
_LOSE_ROWS = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA journal_mode=WAL")
n = c.execute("DELETE FROM instances WHERE rowid IN (SELECT rowid FROM instances ORDER BY path LIMIT 2)").rowcount
c.commit()
assert n == 2
if sys.argv[2] == "crashed":
    os._exit(0)  # as if killed: node.db-wal and node.db-shm stay
c.close()  # a clean stop: no -wal, no -shm (SQLite must create them to open the database again)
"""

_MOUNT = """set -e
mount -t tmpfs -o size=16m tmpfs "$1/stage"
cp -a "$1/var/." "$1/stage/"
mount --bind "$1/stage" "$1/var"
dd if=/dev/zero of="$1/var/filler" bs=4k 2>/dev/null || true
shift
exec "$@"
"""


class FullDiskNode(NodeProcess):
    """``mrinode serve`` in its own mount namespace whose data folder is a full 16 MiB tmpfs."""

    def command(self) -> list[str]:
        """``mrinode serve`` behind the mount of a full tmpfs on its data folder."""
        (self.workdir / "stage").mkdir(exist_ok=True)
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", _MOUNT, "sh", str(self.workdir),
                *super().command()]

    def inside(self, path: Path) -> Path:
        """``path`` as the node sees it (through its mount namespace)."""
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root") / path.relative_to("/")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
@pytest.mark.parametrize("how", ["crashed", "stopped"])
def test_node_starts_and_serves_with_a_full_disk(scp_node: ScpNode, tmp_path: Path, how: str) -> None:
    """The node last ran on this data folder and was killed (``crashed``) or stopped cleanly
    (``stopped``; it left its space reserve); two index rows were lost; the disk is full."""
    _, seed = write_mr_series(tmp_path / "seed", 3)
    assert _store(scp_node.port, seed) == [0, 0, 0]
    scp_node.scp.stop(grace_s=5)
    scp_node.store.close()
    node = FullDiskNode(tmp_path / "node", extra={"dicom": {"min_free_mb": 4}})
    shutil.copytree(scp_node.cfg.node.data_dir, node.data_dir)
    db = node.data_dir / "node.db"
    with contextlib.closing(sqlite3.connect(db)) as c:  # the rows name the new place
        c.execute("UPDATE instances SET path = replace(path, ?, ?)",
                  (str(scp_node.cfg.node.data_dir), str(node.data_dir)))
        c.commit()
    if how == "stopped":
        from dicom_node.config import load_config

        NodeService(load_config(node.config_path)).store.close()  # as a start and stop do
        assert (node.data_dir / ".space-reserve").exists()
    subprocess.run([sys.executable, "-c", _LOSE_ROWS, str(db), how], check=True)
    assert Path(f"{db}-shm").exists() == (how == "crashed")

    with node:
        var = node.inside(node.data_dir)
        health = node.api("GET", "/health").json()
        assert health["status"] == "degraded" and health["disk_low"] is True, health
        assert os.statvfs(var).f_bavail * os.statvfs(var).f_frsize < 4 << 20
        assert "mrinode_disk_low 1.0" in node.api("GET", "/metrics").text
        assert _echo(node.dicom_port) == 0
        _, new = write_mr_series(tmp_path / "new", 1)
        assert _store(node.dicom_port, new) == [0xA700]
        log = node.log_path.read_text()
        assert "Traceback" not in log
        if how == "crashed":  # no reserve: the lost rows wait for a start with space
            assert "stay for the next start" in log
        else:  # the reserve gave the database room: recovered at once
            assert "released the 2 MiB space reserve" in log and "(2 re-indexed)" in log
        # The three accepted instances, nothing of the refused one.
        assert sorted(p.name for p in (var / "spool").rglob("*.dcm")) == sorted(
            f"{pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID}.dcm" for p in seed)

        # Space is freed: within the watermark's check interval the node is whole again.
        (var / "filler").unlink()
        deadline = time.monotonic() + 10
        while node.api("GET", "/health").json()["status"] != "ok" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert node.api("GET", "/health").json()["disk_low"] is False
        assert _store(node.dicom_port, new) == [0]
        assert "mrinode_disk_low 0.0" in node.api("GET", "/metrics").text
        assert len(list((var / "spool").rglob("*.dcm"))) == 4
        assert (var / ".space-reserve").exists()  # kept again for the next full disk
        assert node.stop() == 0
    assert "Traceback" not in node.log_tail(500)
