"""The REST API under odd input: every route, every method, with and without the token.

A :class:`~dicom_node.service.NodeService` is built (not started) on a temporary data
folder with one study and one job in its database; the app is driven in-process with
FastAPI's TestClient, and a few raw requests go to a real uvicorn on loopback. No answer
may be a 5xx, and everything but ``GET /health`` needs the token.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from dicom_node.api import create_app
from dicom_node.config import parse_config
from dicom_node.service import NodeService
from dicom_node.store import InstanceRecord
from tests.support.orthanc import free_port

TOKEN = "sweep-token"
STUDY = "1.2.826.0.1.3680043.8.498.4242"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")

#: Odd path and query values, already URL-encoded where they must be.
ODD: tuple[str, ...] = (
    "99999999999999999999", str(2**63), str(2**63 - 1), "-9223372036854775809", "-1", "0", "1", "1e309",
    "nan", "inf", "0x10", "1.5", "%FF%FE%FD", "%C0%AF", "%00", "a%00b", "x" * 5000, "9" * 400,
    "..%2F..%2Fetc%2Fpasswd", "..", "%2E%2E", "%E2%80%AE", "1.2.3%0AFAKE%20LOG", "%F0%9F%98%80", "true",
    "%27%3B%20DROP%20TABLE%20jobs%3B--", STUDY,
)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[NodeService]:
    cfg = parse_config({
        "node": {"data_dir": str(tmp_path / "var")},
        "dicom": {"host": "127.0.0.1", "port": free_port()},
        "api": {"host": "127.0.0.1", "port": free_port(), "token": TOKEN},
    })
    svc = NodeService(cfg)
    svc.store.add_instance(InstanceRecord(
        sop_uid=STUDY + ".1.1", study_uid=STUDY, series_uid=STUDY + ".1", sop_class="1.2.840.10008.5.1.4.1.1.4",
        modality="MR", series_desc="AX T1", transfer_syntax="1.2.840.10008.1.2.1", path=str(tmp_path / "x.dcm"),
        size=1, calling_ae="STORESCU"))
    svc.complete_study(STUDY)
    try:
        yield svc
    finally:
        svc.store.close()


@pytest.fixture
def client(service: NodeService) -> Iterator[TestClient]:
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        yield c


def _routes(client: TestClient) -> list[tuple[str, set[str], list[str]]]:
    """``(path template, methods, query parameter names)`` of every route of the app."""
    out = []
    for r in client.app.routes:  # type: ignore[attr-defined]
        if isinstance(r, APIRoute):
            out.append((r.path, set(r.methods or ()), [p.name for p in r.dependant.query_params]))
        elif isinstance(r, Route):
            out.append((r.path, set(r.methods or ()), []))
    return out


def _fill(template: str, value: str) -> str:
    while "{" in template:
        a, b = template.index("{"), template.index("}")
        template = template[:a] + value + template[b + 1:]
    return template


def test_the_sweep_sees_every_route(client: TestClient) -> None:
    paths = {p for p, _, _ in _routes(client)}
    assert {"/health", "/studies", "/studies/{study_uid}", "/studies/{study_uid}/complete", "/jobs",
            "/jobs/{job_id}", "/jobs/{job_id}/retry", "/metrics", "/openapi.json"} <= paths


def test_every_route_but_health_needs_the_token(client: TestClient) -> None:
    for path, _methods, _ in _routes(client):
        url = _fill(path, "1")
        for method in METHODS:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                            {"Authorization": f"Basic {TOKEN}"}):
                r = client.request(method, url, headers=headers)
                if path == "/health" and method == "GET":
                    assert r.status_code == 200, (method, url)
                else:
                    assert r.status_code == 401, (method, url, headers, r.status_code)
                    assert r.headers["www-authenticate"] == "Bearer"
                    assert "paths" not in r.text
    # Unknown paths are refused the same way, so nothing is told about what exists.
    for url in ("/docs", "/redoc", "/nope", "/health/", "/openapi.json/", "/jobs/1/nope"):
        assert client.get(url).status_code == 401, url
    # A WebSocket without the token is closed before it reaches the app (policy violation).
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/health"):
        pass
    assert closed.value.code == 1008


def test_the_schema_is_served_with_the_token(client: TestClient) -> None:
    schema = client.get("/openapi.json", headers=AUTH)
    assert schema.status_code == 200 and "/jobs/{job_id}" in schema.json()["paths"]
    assert "/openapi.json" not in schema.json()["paths"]
    # No open docs pages with the token either (they would load scripts from the internet).
    assert client.get("/docs", headers=AUTH).status_code == 404


def test_odd_inputs_never_answer_5xx(client: TestClient) -> None:
    seen: dict[int, int] = {}
    for path, methods, query in _routes(client):
        for value in ODD:
            url = _fill(path, value)
            for method in (*methods, "PUT", "DELETE"):
                for headers in (AUTH, {}):
                    r = client.request(method, url, headers=headers)
                    seen[r.status_code] = seen.get(r.status_code, 0) + 1
                    assert r.status_code < 500, (method, url[:120], r.status_code, r.text[:300])
            for name in (*query, "limit", "state", "study_uid", "rerun", "junk"):
                url = _fill(path, "1") + f"?{name}={value}&{name}=2"
                for method in methods:
                    r = client.request(method, url, headers=AUTH)
                    seen[r.status_code] = seen.get(r.status_code, 0) + 1
                    assert r.status_code < 500, (method, url[:120], r.status_code, r.text[:300])
    assert seen.get(200, 0) > 0 and seen.get(401, 0) > 0 and seen.get(422, 0) > 0 and seen.get(404, 0) > 0


@pytest.mark.parametrize(("url", "status"), [
    ("/jobs/99999999999999999999", 422), (f"/jobs/{2**63}", 422), (f"/jobs/{2**63 - 1}", 404), ("/jobs/-1", 422),
    ("/jobs/0", 422), (f"/jobs/{2**63}/retry", 422), ("/jobs?limit=9223372036854775808", 422),
    ("/jobs?limit=-1", 422), ("/jobs?limit=0", 422), ("/studies?limit=99999999999999999999", 422),
    ("/studies?limit=-5", 422), ("/jobs?state=bogus", 422), ("/jobs?state=done", 200),
    ("/jobs?limit=10000", 200), ("/jobs?limit=10001", 422), ("/studies/" + "9" * 2000, 422),
    ("/studies/1.2.3%00", 404), ("/jobs?study_uid=%FF", 200),
])
def test_out_of_range_inputs_are_4xx(client: TestClient, url: str, status: int) -> None:
    method = "POST" if url.endswith("/retry") else "GET"
    assert client.request(method, url, headers=AUTH).status_code == status


def test_the_routes_still_work(client: TestClient) -> None:
    jobs = client.get("/jobs", headers=AUTH).json()
    assert len(jobs) == 1 and jobs[0]["study_uid"] == STUDY
    assert client.get(f"/jobs/{jobs[0]['id']}", headers=AUTH).json()["state"] == "queued"
    assert client.get(f"/studies/{STUDY}", headers=AUTH).json()["n_instances"] == 1
    assert client.get("/studies?limit=1", headers=AUTH).json()[0]["study_uid"] == STUDY
    assert client.post(f"/jobs/{jobs[0]['id']}/retry?rerun=true", headers=AUTH).status_code == 200
    assert client.post(f"/studies/{STUDY}/complete", headers=AUTH).json()["queued"] is False
    assert "mrinode_" in client.get("/metrics", headers=AUTH).text


def test_a_locked_or_full_database_is_503_not_500(client: TestClient, service: NodeService,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    def full(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(service.queue, "list_jobs", full)
    r = client.get("/jobs", headers=AUTH)
    assert r.status_code == 503 and "disk is full" in r.json()["detail"] and r.headers["retry-after"] == "5"


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except TimeoutError:
            pass
    return b"".join(chunks)


def test_raw_requests_to_a_real_uvicorn(service: NodeService) -> None:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="off"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
        for target in (b"/jobs/\xff\xfe", b"/jobs/1\x00", b"/studies/\xc0\xaf", b"/jobs?limit=\xff",
                       b"/studies/" + b"7" * 20000, b"/../../etc/passwd", b"/jobs/99999999999999999999",
                       b"/openapi.json"):
            for headers in (auth, b""):
                answer = _raw(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"Connection: close\r\n\r\n")
                status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else b"closed"
                assert not status.startswith(b"5"), (target[:60], headers, answer[:200])
                if not headers and status != b"closed":
                    assert status in (b"400", b"401"), (target[:60], answer[:200])
        # Garbage instead of HTTP is refused by the server itself.
        answer = _raw(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n")
        assert not answer.startswith(b"HTTP/1.1 5")
    finally:
        server.should_exit = True
        t.join(10)
