"""``mrinode serve`` as a real process against dcmtk: echo, store, refusal, REST, jobs CLI, SIGTERM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.mrfiles import write_mr_series
from tests.support.node import TEST_PIPELINE, NodeProcess

pytestmark = pytest.mark.e2e
ENV = dict(os.environ, TCP_NODELAY="1")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, env=ENV, timeout=120, check=False)


def _mrinode(*args: str) -> subprocess.CompletedProcess[str]:
    return _run(sys.executable, "-m", "dicom_node", *args)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def test_echo_store_refuse_rest_and_jobs_cli(tmp_path: Path, stack: ExitStack) -> None:
    node = stack.enter_context(NodeProcess(tmp_path / "node", pipelines=[TEST_PIPELINE]))
    port = str(node.dicom_port)
    assert _run("echoscu", "-aec", "MRINODE", "127.0.0.1", port).returncode == 0
    refused = _run("echoscu", "-aet", "STRANGER", "-aec", "MRINODE", "127.0.0.1", port)
    assert refused.returncode != 0 and "Association Rejected" in refused.stderr
    study_uid, _ = write_mr_series(tmp_path / "in", 8)
    r = _run("storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", port, str(tmp_path / "in"))
    assert r.returncode == 0, r.stderr

    # REST: the token is required; the study is listed with its series.
    assert node.api("GET", "/studies", token=None).status_code == 401
    assert node.api("GET", "/studies", token="wrong").status_code == 401
    assert node.api("GET", "/health", token=None).status_code == 200
    studies = node.api("GET", "/studies").json()
    assert [s["study_uid"] for s in studies] == [study_uid]
    study = node.api("GET", f"/studies/{study_uid}").json()
    assert study["n_instances"] == 8 and study["series"][0]["modality"] == "MR" and study["state"] == "open"
    assert node.api("GET", "/studies/1.2.3.4").status_code == 404
    assert node.api("POST", "/studies/1.2.3.4/complete").status_code == 404

    # Completion queues one job; the test pipeline runs; with no destination for STORESCU
    # the export fails with a reason naming the calling AE, and the result is kept.
    done = node.api("POST", f"/studies/{study_uid}/complete").json()
    assert done["queued"] and node.api("POST", f"/studies/{study_uid}/complete").json()["queued"] is False
    job = node.wait_job(study_uid, states=("failed",), timeout=120)
    assert "no destination" in job["last_error"] and "STORESCU" in job["last_error"]
    assert len(job["outputs"]) == 1 and Path(job["outputs"][0]).is_file()

    # The jobs CLI reads the same database; retry re-sends (the result is kept).
    listed = _mrinode("jobs", "--config", str(node.config_path), "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["id"] == job["id"]
    table = _mrinode("jobs", "--config", str(node.config_path))
    assert "failed" in table.stdout and "no destination" in table.stdout
    retried = _mrinode("jobs", "--config", str(node.config_path), "retry", str(job["id"]))
    assert retried.returncode == 0 and "re-sending" in retried.stdout
    assert _mrinode("jobs", "--config", str(node.config_path), "retry", "999").returncode == 1

    metrics = node.api("GET", "/metrics").text
    assert "mrinode_instances_received_total 8.0" in metrics
    assert 'mrinode_associations_refused_total{reason="calling_ae"} 1.0' in metrics
    assert 'mrinode_job_stage_seconds_count{stage="pipeline"} 1.0' in metrics

    # A late instance re-opens the completed study; completing it again queues a new run.
    extra_uid, _ = write_mr_series(tmp_path / "late", 1, study_uid=study_uid)
    assert extra_uid == study_uid
    assert _run("storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", port, str(tmp_path / "late")).returncode == 0
    reopened = node.api("GET", f"/studies/{study_uid}").json()
    assert reopened["state"] == "open" and reopened["reopened"] == 1 and reopened["n_instances"] == 9
    assert node.api("POST", f"/studies/{study_uid}/complete").json()["queued"]
    assert len(node.api("GET", "/jobs", params={"study_uid": study_uid}).json()) == 2

    assert node.stop() == 0
    assert "stopped" in node.log_tail()
    # No patient names or IDs in the log.
    text = node.log_path.read_text()
    assert "PHANTOM01" not in text and "Phantom" not in text and study_uid not in text


def test_bad_config_stops_with_a_sentence(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[dicom]\nport = "eleven"\n[api]\nhots = "x"\n')
    r = _mrinode("serve", "--config", str(cfg))
    assert r.returncode == 2
    assert "config key 'dicom.port'" in r.stderr and "config key 'api.hots'" in r.stderr
    assert "Traceback" not in r.stderr
    typo = tmp_path / "typo.toml"
    typo.write_text('[[pipelines]]\nname = "seg"\nfunction = "dicom_node.pipelines.tumor:run"\n')
    r2 = _mrinode("serve", "--config", str(typo))
    assert r2.returncode == 2 and "config key 'pipelines[0] (seg).function'" in r2.stderr
    missing = _mrinode("serve", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "cannot read configuration file" in missing.stderr


def test_stable_study_completes_without_rest_call(tmp_path: Path, stack: ExitStack) -> None:
    node = stack.enter_context(NodeProcess(tmp_path / "node", extra={"tracker": {"stable_after_s": 1.0}}))
    study_uid, _ = write_mr_series(tmp_path / "in", 3)
    assert _run("storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port),
                str(tmp_path / "in")).returncode == 0
    t0 = time.monotonic()
    job = node.wait_job(study_uid, timeout=30)
    assert job["state"] == "done" and job["summary"] == {"note": "no enabled pipelines"}
    assert time.monotonic() - t0 < 30
    assert node.api("GET", f"/studies/{study_uid}").json()["state"] == "complete"


def test_crashing_pipeline_fails_its_job_and_the_node_keeps_serving(tmp_path: Path, stack: ExitStack) -> None:
    crash = {**TEST_PIPELINE, "options": {"fail": "crash"}}
    node = stack.enter_context(NodeProcess(tmp_path / "node", pipelines=[crash]))
    study_uid, _ = write_mr_series(tmp_path / "in", 2)
    port = str(node.dicom_port)
    assert _run("storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", port, str(tmp_path / "in")).returncode == 0
    assert node.api("POST", f"/studies/{study_uid}/complete").status_code == 200
    job = node.wait_job(study_uid, states=("failed",), timeout=90)
    assert job["attempts"] == 2 and "exit code 70" in job["last_error"]
    assert node.proc is not None and node.proc.poll() is None
    assert _run("echoscu", "-aec", "MRINODE", "127.0.0.1", port).returncode == 0


def test_unwritable_data_folder_stops_with_a_sentence(tmp_path: Path) -> None:
    # data_dir is a regular file: the store cannot be created. Before the fix this was a traceback.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'[node]\ndata_dir = "{blocker}"\n[dicom]\nport = 11999\n[api]\nenabled = false\n')
    r = _mrinode("serve", "--config", str(cfg))
    assert r.returncode == 1, r.stderr
    assert "cannot start" in r.stderr and str(blocker) in r.stderr
    assert "Traceback" not in r.stderr
