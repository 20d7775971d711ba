"""Fixtures for the node's unit and dcmtk tests: an in-process SCP on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dicom_node.audit import AuditLog
from dicom_node.config import NodeConfig, parse_config
from dicom_node.metrics import NodeMetrics
from dicom_node.scp import StoreSCP
from dicom_node.spool import Spool
from dicom_node.store import Store
from tests.support.orthanc import free_port


@dataclass
class ScpNode:
    """An in-process SCP with its store, spool, metrics and audit log."""

    cfg: NodeConfig
    store: Store
    spool: Spool
    metrics: NodeMetrics
    audit: AuditLog
    scp: StoreSCP

    @property
    def port(self) -> int:
        return self.scp.port

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return float(value or 0.0)


def make_config(tmp_path: Path, **dicom: Any) -> NodeConfig:
    """A node configuration on a free port with the dcmtk callers and TESTSCU admitted."""
    callers = [{"ae_title": a, "host": "127.0.0.1"} for a in ("STORESCU", "ECHOSCU", "TESTSCU")]
    return parse_config({
        "node": {"data_dir": str(tmp_path / "var")},
        "dicom": {"host": "127.0.0.1", "port": free_port(), "allowed_callers": callers, **dicom},
    })


@pytest.fixture
def scp_node(tmp_path: Path) -> Iterator[ScpNode]:
    """A started in-process SCP (stopped at the end)."""
    cfg = make_config(tmp_path)
    store = Store(cfg.db_path)
    metrics = NodeMetrics()
    node = ScpNode(cfg, store, Spool(cfg.spool_dir), metrics, AuditLog(cfg.audit_log_path),
                   StoreSCP(cfg, store, Spool(cfg.spool_dir), metrics, AuditLog(cfg.audit_log_path)))
    node.scp.start()
    try:
        yield node
    finally:
        node.scp.stop(grace_s=5)
        store.close()
