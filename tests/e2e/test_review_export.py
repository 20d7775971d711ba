"""Review before export against a real Orthanc: held results reach the PACS only once approved (issue 21).

Orthanc routes a study to the node; with ``export.require_approval`` the job stops in
``awaiting_review`` (a signed webhook says so), Orthanc holds no SEG; ``mrinode jobs approve``
releases it and the valid SEG arrives in Orthanc; a rejected study's result never leaves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from dicom_node.notify import SIGNATURE_HEADER, verify
from tests.support.dciodvfy import dciodvfy
from tests.support.mrfiles import write_mr_series
from tests.support.node import TEST_PIPELINE, NodeProcess
from tests.support.orthanc import OrthancServer, free_port

pytestmark = pytest.mark.e2e
SECRET = "webhook-secret"


def _storescu(port: int, aec: str, folder: Path) -> None:
    env = dict(os.environ, TCP_NODELAY="1")
    r = subprocess.run(["storescu", "-aec", aec, "+sd", "127.0.0.1", str(port), str(folder)],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr


def _jobs(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicom_node", "jobs", *args, "--config", str(node.config_path)],
                          capture_output=True, text=True, timeout=60, check=False)


class _Hooks(BaseHTTPRequestHandler):
    got: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append((dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hooks() -> Iterator[tuple[str, type[_Hooks]]]:
    handler = type("Hooks", (_Hooks,), {"got": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mrinode", handler
    finally:
        server.shutdown()
        server.server_close()


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_results_wait_for_review_then_reach_orthanc(tmp_path: Path, hooks: tuple[str, type[_Hooks]]) -> None:
    url, handler = hooks
    with ExitStack() as stack:
        node_port = free_port()
        orthanc = stack.enter_context(
            OrthancServer(tmp_path / "orthanc", modalities={"mrinode": ("MRINODE", "127.0.0.1", node_port)}))
        node = stack.enter_context(NodeProcess(
            tmp_path / "node", dicom_port=node_port, pipelines=[TEST_PIPELINE],
            destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
                           "port": orthanc.dicom_port}],
            extra={"export": {"require_approval": True},
                   "notifications": {"backoff_initial_s": 0.2,
                                     "webhooks": [{"url": url, "secret": SECRET, "events": ["awaiting_review", "done"]}]}},
        ))
        uids = []
        for name in ("approve", "reject"):
            study_uid, _ = write_mr_series(tmp_path / name, 6)
            _storescu(orthanc.dicom_port, "ORTHANC", tmp_path / name)
            oid = orthanc.find_study(study_uid)
            orthanc.post("/modalities/mrinode/store", json=[oid])
            assert node.api("POST", f"/studies/{study_uid}/complete").json()["queued"]
            uids.append(study_uid)
        held = [node.wait_job(uid, states=("awaiting_review",), timeout=120) for uid in uids]
        time.sleep(2.0)  # the exporter had its chance: nothing may have left
        assert all("SEG" not in orthanc.study_modalities(uid) for uid in uids)
        assert _wait(lambda: len(handler.got) >= 2, 30, "two awaiting_review webhooks")

        listing = _jobs(node, "list", "--state", "awaiting_review")
        assert listing.returncode == 0 and listing.stdout.count("awaiting_review") == 2
        assert node.api("POST", f"/jobs/{held[0]['id']}/approve", token=None).status_code == 401
        approved = node.api("POST", f"/jobs/{held[0]['id']}/approve", params={"by": "pacs-admin"})
        assert approved.status_code == 200 and approved.json()["state"] == "exporting"
        rejected = _jobs(node, "reject", str(held[1]["id"]), "--reason", "wrong side")
        assert rejected.returncode == 0, rejected.stderr
        node.wait_job(uids[0], timeout=60)
        assert _wait(lambda: "SEG" in orthanc.study_modalities(uids[0]), 30, "the approved SEG in Orthanc")
        assert node.wait_job(uids[1], states=("rejected",), timeout=10)["last_error"].endswith("wrong side")
        time.sleep(1.0)
        assert "SEG" not in orthanc.study_modalities(uids[1])
        again = _jobs(node, "approve", str(held[1]["id"]))
        assert again.returncode == 1 and "not awaiting_review" in again.stderr
        assert node.api("POST", f"/jobs/{held[1]['id']}/approve").status_code == 409

        oid = orthanc.find_study(uids[0])
        seg = next(s for s in orthanc.get(f"/studies/{oid}/series") if s["MainDicomTags"]["Modality"] == "SEG")
        inst = orthanc.get(f"/series/{seg['ID']}/instances")[0]
        path = tmp_path / "seg.dcm"
        with orthanc.client() as c:
            path.write_bytes(c.get(f"/instances/{inst['ID']}/file").content)
        assert dcmread(path).StudyInstanceUID == uids[0] and dciodvfy(path).errors == []
        _wait(lambda: any(json.loads(b)["event"] == "done" for _, b in handler.got), 30, "the done webhook")

    events = [json.loads(body)["event"] for _, body in handler.got]
    assert sorted(events) == ["awaiting_review", "awaiting_review", "done"]
    for headers, body in handler.got:
        assert verify(SECRET, body, headers[SIGNATURE_HEADER])
        assert all(uid not in body.decode() for uid in uids)
    audit = [json.loads(x) for x in (node.data_dir / "audit.jsonl").read_text().splitlines()]
    review = {(e["event"], e["job"]) for e in audit if e["event"] in ("job_approved", "job_rejected")}
    assert review == {("job_approved", held[0]["id"]), ("job_rejected", held[1]["id"])}
    by = {e["event"]: e["by"] for e in audit if e["event"] in ("job_approved", "job_rejected")}
    assert by["job_approved"] == "api:pacs-admin" and by["job_rejected"].startswith("cli:")
