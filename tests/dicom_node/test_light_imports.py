"""The receive path (SCP, fast path, spool, store, recovery, service) runs without the heavy stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.mrfiles import write_mr_series
from tests.support.orthanc import free_port

_CODE = """
import subprocess, sys
from dicom_node.audit import AuditLog
from dicom_node.config import parse_config
from dicom_node.metrics import NodeMetrics
from dicom_node.recovery import reindex_unindexed
from dicom_node.scp import StoreSCP
from dicom_node.spool import Spool
from dicom_node.store import Store
import dicom_node.service

data, port, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = parse_config({"node": {"data_dir": data},
                    "dicom": {"host": "127.0.0.1", "port": port,
                              "allowed_callers": [{"ae_title": "STORESCU", "host": "127.0.0.1"}]}})
store = Store(cfg.db_path)
spool = Spool(cfg.spool_dir)
reindex_unindexed(store, spool)
scp = StoreSCP(cfg, store, spool, NodeMetrics(), AuditLog(cfg.audit_log_path))
scp.start()
try:
    r = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(port), folder],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
finally:
    scp.stop(grace_s=5)
print("count=" + str(store.count_instances()))
print("heavy=" + ",".join(sorted(m for m in ("torch", "monai", "highdicom", "nibabel", "scipy") if m in sys.modules)))
"""


def test_receiving_imports_no_heavy_package(tmp_path: Path) -> None:
    write_mr_series(tmp_path / "in", 3)
    proc = subprocess.run(
        [sys.executable, "-c", _CODE, str(tmp_path / "var"), str(free_port()), str(tmp_path / "in")],
        capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ, TCP_NODELAY="1"),
    )
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert out["count"] == "3"
    assert out["heavy"] == ""
