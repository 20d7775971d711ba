"""Destinations: kinds registered in one place, each with its own typed config and sender."""

from __future__ import annotations

import http.server
import inspect
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.config import ConfigError, load_config, parse_config
from dicom_node.config_models import DESTINATION_KINDS, DicomDestination, DicomWebDestination
from dicom_node.export import ExportError, deliver
from tests.dicom_node.conftest import ScpNode
from tests.support.mrfiles import write_mr_series

REPO = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return load_config(path)


def test_unknown_kind_is_refused_at_start_up_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, '[[destinations]]\nname = "pacs"\nkind = "sftp"\nhost = "127.0.0.1"\n')
    text = str(info.value)
    assert "config key 'destinations[0] (pacs)': kind 'sftp' is not a destination kind (known: dicom, dicomweb)." in text


@pytest.mark.parametrize(("entry", "expected"), [
    ({"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1"},
     "config key 'destinations[0] (pacs).port': Field required."),
    ({"name": "web", "kind": "dicomweb"}, "config key 'destinations[0] (web).url': Field required."),
    ({"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104, "url": "http://x"},
     "config key 'destinations[0] (pacs).url': unknown key"),  # a key of another kind
    ({"name": "pacs", "ae_title": "PACS", "hots": "127.0.0.1", "port": 104},
     "config key 'destinations[0] (pacs).hots': unknown key (did you mean 'host'?)"),
    ({"name": "web", "kind": "dicomweb", "url": "http://x", "auth": {"tokne": "t"}},
     "config key 'destinations[0] (web).auth.tokne': unknown key (did you mean 'token'?)"),
    ({"name": "pacs", "ae_title": "A\\B", "host": "127.0.0.1", "port": 104},
     "config key 'destinations[0] (pacs).ae_title': 'A\\\\B' is not an AE title"),
])
def test_each_kind_has_its_own_typed_keys(entry: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"destinations": [entry]}, source="node.toml")
    assert expected in str(info.value)


def test_kinds_load_typed_and_dicom_is_the_default() -> None:
    cfg = parse_config({"destinations": [
        {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104},
        {"name": "web", "kind": "dicomweb", "url": "http://127.0.0.1:1/studies", "auth": {"token": "t"}},
    ]})
    pacs, web = cfg.destinations
    assert isinstance(pacs, DicomDestination) and pacs.address == "PACS@127.0.0.1:104"
    assert isinstance(web, DicomWebDestination) and web.auth is not None and web.auth.token == "t"


@pytest.mark.parametrize("kind", sorted(DESTINATION_KINDS))
def test_every_kind_registers_a_sender_with_the_common_signature(kind: str) -> None:
    import importlib

    module, _, attr = DESTINATION_KINDS[kind].sender.partition(":")
    send = getattr(importlib.import_module(module), attr)
    params = inspect.signature(send).parameters
    assert list(params)[:2] == ["dest", "paths"]
    assert {"calling_ae", "timeout_s"} <= {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}


def test_deploy_configs_still_load() -> None:
    files = sorted((REPO / "deploy").rglob("*.toml"))
    loaded = 0
    for path in files:
        if "destinations" in path.read_text() and "[node]" in path.read_text():
            cfg = load_config(path)
            assert all(type(d) in DESTINATION_KINDS.values() for d in cfg.destinations)
            loaded += 1
    assert loaded >= 2


def test_deliver_dicom_stores_into_an_scp(scp_node: ScpNode, tmp_path: Path) -> None:
    study_uid, paths = write_mr_series(tmp_path / "in", 3)
    dest = DicomDestination(name="pacs", ae_title="MRINODE", host="127.0.0.1", port=scp_node.port)
    sent = deliver(dest, paths, calling_ae="TESTSCU", timeout_s=10)
    assert len(sent) == 3
    assert len(scp_node.store.instance_paths(study_uid)) == 3


@pytest.fixture
def stow_server() -> Iterator[tuple[str, list[tuple[str, int]]]]:
    seen: list[tuple[str, int]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.headers.get("Authorization", ""), len(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web/studies", seen
    finally:
        server.shutdown()
        server.server_close()


def test_deliver_dicomweb_posts_one_stow_request(stow_server: tuple[str, list[tuple[str, int]]],
                                                tmp_path: Path) -> None:
    url, seen = stow_server
    _, paths = write_mr_series(tmp_path / "in", 2)
    dest = parse_config({"destinations": [{"name": "web", "kind": "dicomweb", "url": url,
                                           "auth": {"token": "s3cret"}}]}).destinations[0]
    assert len(deliver(dest, paths, calling_ae="MRINODE", timeout_s=10)) == 2
    assert seen and seen[0][0] == "Bearer s3cret" and seen[0][1] > sum(p.stat().st_size for p in paths)


def test_deliver_failure_names_the_destination(tmp_path: Path) -> None:
    from tests.support.orthanc import free_port

    _, paths = write_mr_series(tmp_path / "in", 1)
    dest = DicomDestination(name="gone", ae_title="GONE", host="127.0.0.1", port=free_port())
    with pytest.raises(ExportError, match=r"destination 'gone' \(GONE@127\.0\.0\.1:\d+\): association failed"):
        deliver(dest, paths, calling_ae="MRINODE", timeout_s=2)
