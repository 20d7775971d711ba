"""The node's side of scale-out without a broker: configuration errors, the WADO-RS spool, the schema migration.

A real ``mrinode serve`` (local engine) serves its spool over WADO-RS to ``dicomweb-client``;
``mrinode serve``/``mrinode worker`` with a wrong ``[scale]`` stop before they listen with a
sentence naming the key.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from dicom_node.config import ConfigError, load_config, parse_config
from dicom_node.queue import JobQueue
from dicom_node.scale.router import _safe_relpath
from dicom_node.store import Store
from tests.support.mrfiles import write_mr_series
from tests.support.node import NodeProcess, to_toml
from tests.support.orthanc import free_port

ENV = dict(os.environ, TCP_NODELAY="1")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicom_node", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=120, check=False)


@pytest.mark.parametrize(("scale", "key"), [
    ({"engine": "celery"}, "scale.broker_url"),
    ({"engine": "celery", "broker_url": "http://broker:5672"}, "scale.broker_url"),
    ({"data_access": "shared"}, "scale.shared_spool_dir"),
    ({"node_url": "node:8000"}, "scale.node_url"),
])
def test_a_wrong_scale_section_names_its_key(scale: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        parse_config({"scale": scale})


def test_serve_with_celery_refuses_no_token_and_a_short_consumer_timeout(tmp_path: Path) -> None:
    base = {"node": {"data_dir": str(tmp_path / "var")}, "api": {"port": free_port()},
            "dicom": {"port": free_port()}, "scale": {"engine": "celery", "broker_url": "amqp://g:g@127.0.0.1:1//"}}
    (tmp_path / "a.toml").write_text(to_toml(base))
    r = _cli("serve", "--config", "a.toml", cwd=tmp_path)
    assert r.returncode == 2 and "config key 'api.token'" in r.stderr, r.stderr
    short = {**base, "api": {"port": free_port(), "token": "t"}, "workers": {"timeout_s": 600.0},
             "scale": {**base["scale"], "consumer_timeout_s": 600.0}}  # type: ignore[dict-item]
    (tmp_path / "b.toml").write_text(to_toml(short))
    r = _cli("serve", "--config", "b.toml", cwd=tmp_path)
    assert r.returncode == 2 and "config key 'scale.consumer_timeout_s'" in r.stderr, r.stderr


@pytest.mark.skipif(importlib.util.find_spec("redis") is not None, reason="the redis client is installed here")
def test_a_redis_broker_without_its_client_names_the_key(tmp_path: Path) -> None:
    cfg = {"node": {"data_dir": str(tmp_path / "var")}, "api": {"port": free_port(), "token": "t"},
           "dicom": {"port": free_port()}, "scale": {"engine": "celery", "broker_url": "redis://127.0.0.1:1/0"}}
    (tmp_path / "r.toml").write_text(to_toml(cfg))
    r = _cli("serve", "--config", "r.toml", cwd=tmp_path)
    assert r.returncode == 2 and "config key 'scale.broker_url'" in r.stderr and "celery[redis]" in r.stderr, r.stderr


def test_worker_without_node_url_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "w.toml").write_text(to_toml({"scale": {"engine": "celery", "broker_url": "amqp://g:g@127.0.0.1:1//",
                                                        "node_token": "t"}}))
    r = _cli("worker", "--config", "w.toml", cwd=tmp_path)
    assert r.returncode == 2 and "config key 'scale.node_url'" in r.stderr, r.stderr
    r = _cli("worker", "--config", "w.toml", "--device", "gpu0", cwd=tmp_path)
    assert r.returncode == 2 and "scale.node_url" in r.stderr  # the key first; then the device option:
    (tmp_path / "w.toml").write_text(to_toml({"scale": {"engine": "celery", "broker_url": "amqp://g:g@127.0.0.1:1//",
                                                        "node_token": "t", "node_url": "http://127.0.0.1:1"}}))
    r = _cli("worker", "--config", "w.toml", "--device", "gpu0", cwd=tmp_path)
    assert r.returncode == 2 and "option --device" in r.stderr, r.stderr


def test_the_spool_is_served_read_only_over_wado_rs_with_the_token(tmp_path: Path) -> None:
    from dicomweb_client import DICOMwebClient

    node = NodeProcess(tmp_path / "node", token="wado-token")
    with node:
        study_uid, paths = write_mr_series(tmp_path / "in", 4, size=32)
        r = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port),
                            str(tmp_path / "in")], env=ENV, capture_output=True, text=True, check=False, timeout=60)
        assert r.returncode == 0, r.stderr
        client = DICOMwebClient(url=f"{node.url}/dicom-web", headers={"Authorization": "Bearer wado-token"})
        got = list(client.iter_study(study_uid))
        sent = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in paths}
        assert sorted(str(ds.SOPInstanceUID) for ds in got) == sorted(sent)
        for ds in got:
            assert ds.pixel_array.tobytes() == sent[str(ds.SOPInstanceUID)].pixel_array.tobytes()
        url = f"{node.url}/dicom-web/studies/{study_uid}"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{node.url}/dicom-web/studies/1.2.3", headers={"Authorization": "Bearer wado-token"}
                         ).status_code == 404
        assert httpx.put(url, headers={"Authorization": "Bearer wado-token"}).status_code == 405  # read-only
        # the workers' routes answer 409 on a node that runs its jobs itself
        r2 = httpx.post(f"{node.url}/scale/tasks/00000000-0000-0000-0000-000000000000/start", json={"worker": "w"},
                        headers={"Authorization": "Bearer wado-token"})
        assert r2.status_code == 409


def test_without_an_api_token_the_worker_routes_are_closed(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", token=None)
    with node:
        assert httpx.get(f"{node.url}/dicom-web/studies/1.2.3").status_code == 403
        assert httpx.get(f"{node.url}/jobs").status_code == 200  # the rest of the API: loopback, open as before


@pytest.mark.parametrize("bad", ["../x.dcm", "a/../../x", "/etc/passwd", "a//b", "a\\b", "."])
def test_an_upload_path_cannot_leave_its_folder(bad: str) -> None:
    from fastapi import HTTPException

    with pytest.raises(HTTPException):
        _safe_relpath(bad)
    assert _safe_relpath("brain-tumour/seg.dcm") == Path("brain-tumour/seg.dcm")


def test_an_older_database_gains_the_worker_column_and_keeps_its_jobs(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    with sqlite3.connect(db) as c:  # the jobs table as it was before issue 17
        c.executescript("""
            CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, study_uid TEXT NOT NULL,
              calling_ae TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
              export_attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, created_at REAL NOT NULL,
              updated_at REAL NOT NULL, started_at REAL, finished_at REAL, next_attempt_at REAL NOT NULL DEFAULT 0,
              result_dir TEXT, outputs TEXT NOT NULL DEFAULT '[]', summary TEXT NOT NULL DEFAULT '{}',
              durations TEXT NOT NULL DEFAULT '{}');
            INSERT INTO jobs(study_uid, state, created_at, updated_at) VALUES ('1.2.3', 'done', 1.0, 1.0);
        """)
    store = Store(db)
    try:
        queue = JobQueue(store)
        job = queue.get(1)
        assert job is not None and job.state == "done" and job.worker is None
        with store.transaction() as c:
            c.execute("UPDATE jobs SET worker='w1' WHERE id=1")
        assert queue.get(1).worker == "w1"  # type: ignore[union-attr]
    finally:
        store.close()
    Store(db).close()  # opening again: nothing to add, no error


def test_the_deploy_files_agree() -> None:
    node = load_config(DEPLOY / "compose" / "node-scale.toml")
    worker = load_config(DEPLOY / "compose" / "worker.toml")
    assert node.scale.engine == worker.scale.engine == "celery"
    assert node.scale.broker_url == worker.scale.broker_url
    assert node.scale.dead_letter_queue == worker.scale.dead_letter_queue  # the queues' arguments must agree
    assert node.scale.consumer_timeout_s == worker.scale.consumer_timeout_s > node.workers.timeout_s
    rabbit = dict(line.split(" = ") for line in (DEPLOY / "compose" / "rabbitmq.conf").read_text().splitlines()
                  if line and not line.startswith("#"))
    assert int(rabbit["consumer_timeout"]) == int(node.scale.consumer_timeout_s * 1000)
    assert worker.scale.node_url == f"http://mrinode:{node.api.port}"
    compose = (DEPLOY / "compose.yaml").read_text()
    for needed in ("rabbitmq:", "worker:", "./compose/worker.toml", "./compose/rabbitmq.conf", "--profile scale"):
        assert needed in compose
    unit = (DEPLOY / "systemd" / "mrinode-worker@.service").read_text()
    assert "mrinode worker --config /etc/mrinode/worker.toml" in unit
    tomllib.loads((DEPLOY / "compose" / "node-scale.toml").read_text())


def test_start_up_checks_of_scale(tmp_path: Path) -> None:
    from dicom_node.scale.checks import check_scale
    from dicom_node.startup import CheckReport

    base = {"scale": {"engine": "celery", "broker_url": f"amqp://g:g@127.0.0.1:{free_port()}//"}}
    report = CheckReport()
    check_scale(parse_config(base), report)
    assert any("config key 'api.token'" in e for e in report.errors), report
    report = CheckReport()
    check_scale(parse_config({**base, "api": {"token": "t"}}), report)
    assert report.errors == [] and any("scale.broker_url" in w and "does not answer" in w for w in report.warnings)
    report = CheckReport()
    check_scale(parse_config({}), report)  # local: nothing to check
    assert (report.errors, report.warnings, report.passed) == ([], [], [])


def test_mrinode_check_runs_the_scale_checks(tmp_path: Path) -> None:
    """``run_checks`` (what ``mrinode check`` and ``serve`` run before listening) includes ``[scale]``'s."""
    from dicom_node.startup import run_checks

    cfg = parse_config({"node": {"data_dir": str(tmp_path)},
                        "scale": {"engine": "celery", "broker_url": f"amqp://g:g@127.0.0.1:{free_port()}//"}})
    report = run_checks(cfg, reach=False)
    assert any("config key 'api.token'" in e for e in report.errors), report
