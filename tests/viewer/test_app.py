"""The viewer's app: OHIF's files with the client-side-route fallback, the app config, and a
read-only same-origin DICOMweb proxy to a real Orthanc (credentials passed through, no CORS)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dicom_node.viewer import ViewerBundleError, study_url
from dicom_node.viewer.app import ViewerSettings, create_app
from tests.support.orthanc import DICOMWEB_PLUGIN, OrthancServer
from tests.viewer.phantom import write_phantom_series


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    with OrthancServer(tmp_path_factory.mktemp("orthanc"), plugins=[DICOMWEB_PLUGIN]) as server:
        yield server


pytestmark = pytest.mark.e2e


def _settings(tmp_path: Path, pacs_url: str) -> ViewerSettings:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<html>ohif index</html>")
    (dist / "app.bundle.js").write_text("console.log('ohif');")
    (dist / "assets" / "x.wasm").write_bytes(b"\0asm")
    (tmp_path / "secret.txt").write_text("not served")
    config = tmp_path / "app-config.js"
    config.write_text("window.config = {name: 'mrinode-test'};")
    return ViewerSettings(dist=dist, app_config=config, pacs_url=pacs_url)


def test_static_files_route_fallback_and_config(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path, "http://127.0.0.1:9"))) as client:
        page = client.get(study_url("http://testserver", "1.2.3"))
        assert page.status_code == 200 and page.text == "<html>ohif index</html>"
        assert client.get("/segmentation/anything").text == "<html>ohif index</html>"
        script = client.get("/app.bundle.js")
        assert "javascript" in script.headers["content-type"] and "ohif" in script.text
        assert client.get("/assets/x.wasm").headers["content-type"] == "application/wasm"
        assert client.get("/app-config.js").text == "window.config = {name: 'mrinode-test'};"
        assert "not served" not in client.get("/../secret.txt").text
        assert "not served" not in client.get("/%2e%2e/secret.txt").text
        down = client.get("/dicom-web/studies")
        assert down.status_code == 502 and "did not answer" in down.text


def test_dicomweb_is_proxied_read_only_with_the_pacs_credentials_and_no_cors(tmp_path: Path,
                                                                             pacs: OrthancServer) -> None:
    series = write_phantom_series(tmp_path / "study", shape=(16, 16, 4))
    for path in series.paths:
        pacs.upload(path)
    with TestClient(create_app(_settings(tmp_path, pacs.url))) as client:
        origin = {"Origin": "http://elsewhere.example"}
        refused = client.get("/dicom-web/studies", headers=origin)
        assert refused.status_code == 401 and "basic" in refused.headers["www-authenticate"].lower()
        found = client.get("/dicom-web/studies", params={"StudyInstanceUID": series.study_uid}, auth=pacs.auth,
                           headers={**origin, "Accept": "application/dicom+json"})
        assert found.status_code == 200
        assert found.json()[0]["0020000D"]["Value"] == [series.study_uid]
        metadata = client.get(f"/dicom-web/studies/{series.study_uid}/series/{series.series_uid}/metadata",
                              auth=pacs.auth)
        assert metadata.status_code == 200 and len(metadata.json()) == 4
        for response in (refused, found, metadata, client.get("/", headers=origin)):
            assert not any(h.lower().startswith("access-control-") for h in response.headers)
        assert client.post("/dicom-web/studies", auth=pacs.auth, content=b"x").status_code == 405
        assert client.delete(f"/dicom-web/studies/{series.study_uid}", auth=pacs.auth).status_code == 405


def test_missing_bundle_says_how_to_fetch_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "http://127.0.0.1:9")
    (settings.dist / "index.html").unlink()
    with pytest.raises(ViewerBundleError, match="make viewer"):
        create_app(settings)


class _DroppingUpstream:
    """A PACS on loopback that answers each connection's first read and silently drops the next.

    That is what a browser's read meets when Orthanc closes an idle kept-alive connection in
    the instant the proxy reuses it.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    @staticmethod
    def _connection(conn: socket.socket) -> None:
        with conn:
            if b"\r\n\r\n" not in conn.recv(65536):
                return
            body = b"[]"
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nConnection: keep-alive\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            conn.recv(65536)  # the reused connection's request: closed without an answer

    def close(self) -> None:
        self.sock.close()


def test_a_read_on_a_dropped_kept_alive_connection_is_sent_again(tmp_path: Path) -> None:
    upstream = _DroppingUpstream()
    try:
        with TestClient(create_app(_settings(tmp_path, upstream.url))) as client:
            answers = [client.get("/dicom-web/studies") for _ in range(3)]
    finally:
        upstream.close()
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert upstream.connections >= 2
