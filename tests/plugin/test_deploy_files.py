"""The deployment files are what they claim: valid JSON/TOML that the real readers accept,
wired to each other (ports, AE titles, tokens, paths)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from dicom_node.config import load_config
from dicom_node.demo.services import DemoPaths, render_node_config, render_orthanc_config, strip_json_comments
from plugin.rules import load_rules

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _orthanc(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(strip_json_comments(path.read_text()))
    return data


@pytest.mark.parametrize("name", ["orthanc.json", "demo/orthanc.json", "compose/orthanc.json"])
def test_orthanc_configs_load_the_plugin_and_dicomweb(name: str) -> None:
    cfg = _orthanc(DEPLOY / name)
    assert str(cfg["PythonScript"]).endswith("plugin/mrinode_plugin.py")
    assert cfg["DicomWeb"] == {**cfg["DicomWeb"], "Enable": True}  # type: ignore[dict-item]
    assert "MrinodeStatus" in cfg["UserMetadata"]  # type: ignore[operator]
    assert cfg["Mrinode"]["StatusMetadata"] == "MrinodeStatus"  # type: ignore[index]
    assert "mrinode" in cfg["DicomModalities"]  # type: ignore[operator]


def test_strip_json_comments_keeps_strings() -> None:
    text = '{"a": "http://x//y", /* block */ "b": 1 // line\n}'
    assert json.loads(strip_json_comments(text)) == {"a": "http://x//y", "b": 1}


def test_demo_files_agree_with_each_other(tmp_path: Path) -> None:
    paths = DemoPaths(root=ROOT, var=tmp_path / "var")
    paths.var.mkdir()
    orthanc = json.loads(render_orthanc_config(paths).read_text())
    node = load_config(render_node_config(paths))
    rules = load_rules(Path(orthanc["Mrinode"]["RulesFile"]))
    assert rules.errors == []
    # The fixed demo endpoints, with the user and password in the file.
    assert (orthanc["HttpPort"], orthanc["DicomPort"]) == (8042, 4242)
    assert orthanc["RegisteredUsers"] == {"demo": "demo"} and orthanc["RemoteAccessAllowed"] is False
    assert Path(orthanc["StorageDirectory"]).is_relative_to(paths.var)
    assert Path(orthanc["PythonScript"]).is_file()
    aet, host, port = (orthanc["DicomModalities"]["mrinode"][k] for k in ("AET", "Host", "Port"))
    assert (aet, host, port) == (node.node.ae_title, node.dicom.host, node.dicom.port)
    mrinode = rules.nodes["mrinode"]
    assert mrinode.url == f"http://{node.api.host}:{node.api.port}" and mrinode.token == node.api.resolve_token()
    assert node.node.ae_title in mrinode.ae_titles
    assert orthanc["DicomAet"] in [c.ae_title for c in node.dicom.allowed_callers]
    pacs = node.destination("pacs")
    assert (pacs.ae_title, pacs.port) == (orthanc["DicomAet"], orthanc["DicomPort"])
    assert node.node.data_dir == paths.var / "node"
    assert [p.function for p in node.pipelines] == ["dicom_node.pipelines.tumour:run"]


def test_compose_files_agree(tmp_path: Path) -> None:
    token = tmp_path / "api-token"
    token.write_text("t0ken\n")
    node_text = (DEPLOY / "compose" / "node.toml").read_text().replace("/etc/mrinode/api-token", str(token))
    (tmp_path / "node.toml").write_text(node_text)
    node = load_config(tmp_path / "node.toml")
    rules_text = (DEPLOY / "compose" / "rules.toml").read_text()
    (tmp_path / "mrinode-api-token").write_text("t0ken\n")
    (tmp_path / "rules.toml").write_text(rules_text)
    rules = load_rules(tmp_path / "rules.toml")
    assert rules.errors == [] and rules.nodes["mrinode"].token == node.api.resolve_token()
    orthanc = _orthanc(DEPLOY / "compose" / "orthanc.json")
    assert orthanc["DicomModalities"]["mrinode"]["Port"] == node.dicom.port  # type: ignore[index]
    compose = (DEPLOY / "compose.yaml").read_text()
    for mounted in ("./compose/orthanc.json", "./compose/rules.toml", "./compose/node.toml", "../plugin"):
        assert mounted in compose
    assert "capabilities: [gpu]" in compose and "127.0.0.1:8042:8042" in compose


def test_systemd_units_name_the_real_entry_points() -> None:
    unit = (DEPLOY / "systemd" / "mrinode.service").read_text()
    assert "ExecStart=/opt/mrinode/.venv/bin/mrinode serve --config /etc/mrinode/node.toml" in unit
    assert "Environment=TCP_NODELAY=1" in unit
    dropin = (DEPLOY / "systemd" / "orthanc-mrinode.conf").read_text()
    assert "Environment=TCP_NODELAY=1" in dropin
    tomllib.loads((DEPLOY / "demo" / "node.toml").read_text())
