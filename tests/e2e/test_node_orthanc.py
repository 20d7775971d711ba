"""The node between a real Orthanc and real dcmtk: route, process, export, retry."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from tests.support.dciodvfy import dciodvfy
from tests.support.mrfiles import write_mr_series
from tests.support.node import TEST_PIPELINE, NodeProcess
from tests.support.orthanc import DICOMWEB_PLUGIN, OrthancServer, free_port

pytestmark = pytest.mark.e2e


def _storescu(port: int, aec: str, folder: Path, aet: str = "STORESCU") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run(["storescu", "-aet", aet, "-aec", aec, "+sd", "127.0.0.1", str(port), str(folder)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Servers entered here are stopped at the end of the test, last started first."""
    with ExitStack() as s:
        yield s


def test_orthanc_routes_study_and_gets_seg_back(tmp_path: Path, stack: ExitStack) -> None:
    node_port = free_port()
    orthanc = stack.enter_context(
        OrthancServer(tmp_path / "orthanc", modalities={"mrinode": ("MRINODE", "127.0.0.1", node_port)})
    )
    node = stack.enter_context(NodeProcess(
        tmp_path / "node",
        dicom_port=node_port,
        destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
                       "port": orthanc.dicom_port}],
        pipelines=[TEST_PIPELINE],
    ))
    study_uid, _ = write_mr_series(tmp_path / "in", 12)
    r = _storescu(orthanc.dicom_port, "ORTHANC", tmp_path / "in")
    assert r.returncode == 0, r.stderr
    oid = orthanc.find_study(study_uid)
    assert oid is not None
    orthanc.post("/modalities/mrinode/store", json=[oid])
    study = node.api("GET", f"/studies/{study_uid}").json()
    assert study["n_instances"] == 12 and study["calling_ae"] == "ORTHANC"
    r2 = node.api("POST", f"/studies/{study_uid}/complete")
    assert r2.status_code == 200 and r2.json()["queued"]
    job = node.wait_job(study_uid, timeout=120)
    assert job["state"] == "done" and len(job["outputs"]) == 1
    assert _wait(lambda: "SEG" in orthanc.study_modalities(study_uid), 30, "the SEG in Orthanc")
    # The object Orthanc holds is the node's result, and it is valid.
    seg_series = [s for s in orthanc.get(f"/studies/{oid}/series") if s["MainDicomTags"]["Modality"] == "SEG"]
    inst = orthanc.get(f"/series/{seg_series[0]['ID']}/instances")[0]
    seg_path = tmp_path / "seg.dcm"
    with orthanc.client() as c:
        seg_path.write_bytes(c.get(f"/instances/{inst['ID']}/file").content)
    ds = dcmread(seg_path)
    assert ds.Modality == "SEG" and ds.StudyInstanceUID == study_uid
    assert dciodvfy(seg_path).errors == []
    audit = (node.data_dir / "audit.jsonl").read_text()
    assert '"event": "study_received"' in audit and '"event": "object_sent"' in audit
    assert study_uid not in audit and "PHANTOM01" not in audit
    assert "PHANTOM01" not in node.log_path.read_text() and "Test^Phantom" not in node.log_path.read_text()


def test_export_retries_while_orthanc_is_down(tmp_path: Path, stack: ExitStack) -> None:
    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc"))
    node = stack.enter_context(NodeProcess(
        tmp_path / "node",
        destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
                       "port": orthanc.dicom_port}],
        pipelines=[TEST_PIPELINE],
        extra={"routing": {"default_destinations": ["pacs"]},
               "export": {"max_attempts": 50, "backoff_initial_s": 0.3, "backoff_max_s": 1.0}},
    ))
    orthanc.stop()
    study_uid, _ = write_mr_series(tmp_path / "in", 6)
    assert _storescu(node.dicom_port, "MRINODE", tmp_path / "in").returncode == 0
    assert node.api("POST", f"/studies/{study_uid}/complete").status_code == 200
    _wait(lambda: node.api("GET", "/jobs", params={"study_uid": study_uid}).json()[0]["export_attempts"] >= 2,
          90, "two failed export attempts")
    job = node.api("GET", "/jobs", params={"study_uid": study_uid}).json()[0]
    assert job["state"] == "exporting" and "association" in (job["last_error"] or "")
    assert "export attempt" in node.log_path.read_text()
    orthanc.start()
    node.wait_job(study_uid, timeout=60)
    assert _wait(lambda: "SEG" in orthanc.study_modalities(study_uid), 30, "the SEG in Orthanc")


def test_results_go_by_stow_rs_to_dicomweb(tmp_path: Path, stack: ExitStack) -> None:
    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc", plugins=[DICOMWEB_PLUGIN]))
    node = stack.enter_context(NodeProcess(
        tmp_path / "node",
        destinations=[{"name": "web", "kind": "dicomweb", "url": f"{orthanc.url}/dicom-web/studies",
                       "auth": {"username": orthanc.user, "password": orthanc.password}}],
        pipelines=[TEST_PIPELINE],
        extra={"routing": {"also_send_to": ["web"]}},
    ))
    study_uid, _ = write_mr_series(tmp_path / "in", 5)
    assert _storescu(node.dicom_port, "MRINODE", tmp_path / "in").returncode == 0
    assert node.api("POST", f"/studies/{study_uid}/complete").status_code == 200
    job = node.wait_job(study_uid, timeout=120)
    assert job["state"] == "done"
    assert orthanc.study_modalities(study_uid) == ["SEG"]
    metrics = node.api("GET", "/metrics").text
    assert 'mrinode_objects_sent_total{destination="web"} 1.0' in metrics
