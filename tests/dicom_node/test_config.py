"""Configuration: the example works as is; bad keys and values are named in one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_a_working_local_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(ROOT / "deploy" / "node.example.toml")
    assert cfg.node.ae_title == "MRINODE" and cfg.dicom.port == 11112
    assert (cfg.api.host, cfg.api.port) == ("127.0.0.1", 8000)
    assert cfg.node.data_dir == tmp_path / "var"  # relative to where it is started
    assert {(c.ae_title, c.host) for c in cfg.dicom.allowed_callers} == {("STORESCU", "127.0.0.1"),
                                                                          ("ECHOSCU", "127.0.0.1")}
    test = [p for p in cfg.pipelines if p.function == "dicom_node.pipelines.testing:run"]
    assert len(test) == 1 and test[0].enabled is False


def test_every_model_field_is_documented_in_the_example() -> None:
    from pydantic import BaseModel

    from dicom_node.config import NodeConfig

    text = (ROOT / "deploy" / "node.example.toml").read_text()

    def keys(model: type[BaseModel]) -> set[str]:
        out = set()
        for name, field in model.model_fields.items():
            out.add(name)
            ann = field.annotation
            inner = getattr(ann, "__args__", (ann,))
            for t in inner:
                if isinstance(t, type) and issubclass(t, BaseModel):
                    out |= keys(t)
        return out

    missing = sorted(k for k in keys(NodeConfig) if k not in text)
    assert missing == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"dicom": {"port": 70000}}, "config key 'dicom.port': Input should be less than or equal to 65535."),
        ({"dicom": {"prot": 1}}, "config key 'dicom.prot': unknown key"),
        ({"node": {"ae_title": "A" * 17}}, "config key 'node.ae_title'"),
        ({"destinations": [{"name": "pacs", "ae_title": "X"}]}, "config key 'destinations[0] (pacs).host': Field required. config key 'destinations[0] (pacs).port': Field required."),
        ({"pipelines": [{"name": "p", "function": "m:f", "required_sequences": ["FLAR"]}]}, "Did you mean 'FLAIR'?"),
        ({"routing": {"default_destinations": ["nowhere"]}}, "config key 'routing.default_destinations': names 'nowhere'"),
        ({"dicom": {"tls": {"enabled": True}}}, "config key 'dicom.tls': tls.enabled needs both 'cert' and 'key'."),
        ({"workers": {"device": "tpu"}}, "config key 'workers.device'"),
    ],
)
def test_bad_values_are_named(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="node.toml")
    assert str(info.value).startswith("node.toml: ")
    assert expected in str(info.value)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[dicom\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_routing_defaults_to_the_calling_ae() -> None:
    cfg = parse_config({
        "destinations": [
            {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242},
            {"name": "other", "ae_title": "OTHER", "host": "127.0.0.1", "port": 4243},
            {"name": "web", "kind": "dicomweb", "url": "http://127.0.0.1:8042/dicom-web/studies"},
        ],
        "routing": {"also_send_to": ["web"]},
    })
    assert [d.name for d in cfg.destinations_for("ORTHANC")] == ["pacs", "web"]
    assert [d.name for d in cfg.destinations_for("UNKNOWN")] == ["web"]


def test_token_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "api.token").write_text("s3cret\n")
    cfg_path = tmp_path / "node.toml"
    cfg_path.write_text('[api]\ntoken_file = "api.token"\n')
    assert load_config(cfg_path).api.resolve_token() == "s3cret"
    (tmp_path / "api.token").write_text("")
    with pytest.raises(ConfigError, match=r"api\.token_file"):
        load_config(cfg_path).api.resolve_token()
