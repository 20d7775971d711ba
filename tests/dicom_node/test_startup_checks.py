"""Start-up checks (issue 21): a broken configuration is refused before the node listens, with the key named.

``mrinode check --config FILE`` and ``mrinode serve --config FILE`` run the same checks: a
corrupt or misspelt bundle, a pipeline that does not import, a string where a port goes are
refusals; an unreachable destination and routing that delivers nowhere are warnings.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.config import ConfigError, parse_config
from dicom_node.startup import run_checks

ROOT = Path(__file__).resolve().parents[2]
DEMO_BUNDLE = ROOT / "models" / "bundles" / "brain-tumour-demo"


def _mrinode(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicom_node", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd or ROOT, check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write(tmp_path: Path, body: str, name: str = "node.toml") -> Path:
    api_port, dicom_port = _free_port(), _free_port()
    path = tmp_path / name
    path.write_text(f'[node]\ndata_dir = "{tmp_path / "var"}"\n[dicom]\nport = {dicom_port}\n'
                    f'[api]\nport = {api_port}\n' + body)
    return path


PIPELINE = '''
[[pipelines]]
name = "brain-tumour"
function = "{function}"
[pipelines.options]
model = "{model}"
'''


def _tumour(model: str, function: str = "dicom_node.pipelines.tumour:run") -> str:
    return PIPELINE.format(function=function, model=model)


def test_the_example_config_passes_and_runs_the_demo_model(tmp_path: Path) -> None:
    r = _mrinode("check", "--config", str(ROOT / "deploy" / "node.example.toml"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bundle 'brain-tumour-demo' loads" in r.stdout
    assert "pipeline 'brain-tumour': dicom_node.pipelines.tumour:run imports" in r.stdout


def test_corrupt_bundle_is_refused_by_check_and_serve(tmp_path: Path) -> None:
    bundle = tmp_path / "brain-tumour-demo"
    shutil.copytree(DEMO_BUNDLE, bundle)
    weights = bundle / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    cfg = _write(tmp_path, _tumour(str(bundle)))
    r = _mrinode("check", "--config", str(cfg))
    assert r.returncode == 1
    assert f"ERROR config key 'pipelines[0] (brain-tumour).options.model': model bundle '{bundle}'" in r.stdout
    assert "SHA-256" in r.stdout or "sha256" in r.stdout.lower()
    s = _mrinode("serve", "--config", str(cfg))
    assert s.returncode == 2 and "pipelines[0] (brain-tumour).options.model" in s.stderr
    assert "not starting" in s.stderr and "Traceback" not in s.stderr
    assert not (tmp_path / "var" / "node.db").exists()  # refused before anything started


def test_misspelt_bundle_name_is_refused_with_its_name(tmp_path: Path) -> None:
    cfg = _write(tmp_path, _tumour("brain-tumor-demo"))
    r = _mrinode("check", "--config", str(cfg))
    assert r.returncode == 1
    assert "'pipelines[0] (brain-tumour).options.model': model bundle 'brain-tumor-demo'" in r.stdout
    assert "brain-tumour-demo" in r.stdout  # the did-you-mean


@pytest.mark.parametrize(
    ("function", "why"),
    [
        ("dicom_node.pipelines.tumor:run", "importing module 'dicom_node.pipelines.tumor' failed"),
        ("dicom_node.pipelines.testing:runn", "module 'dicom_node.pipelines.testing' has no callable 'runn'"),
    ],
)
def test_pipeline_that_does_not_import_is_refused(tmp_path: Path, function: str, why: str) -> None:
    cfg = _write(tmp_path, f'[[pipelines]]\nname = "seg"\nfunction = "{function}"\n')
    r = _mrinode("check", "--config", str(cfg))
    assert r.returncode == 1
    assert f"ERROR config key 'pipelines[0] (seg).function': '{function}': {why}" in r.stdout


def test_pipeline_module_that_raises_on_import_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / "broken_pipeline.py").write_text("import nonexistent_dependency_xyz\ndef run(request):\n    pass\n")
    monkeypatch.setenv("PYTHONPATH", str(pkg))
    cfg = parse_config({"pipelines": [{"name": "mine", "function": "broken_pipeline:run"}]})
    report = run_checks(cfg, reach=False)
    assert len(report.errors) == 1
    assert report.errors[0].startswith("config key 'pipelines[0] (mine).function': 'broken_pipeline:run': importing")
    assert "No module named 'nonexistent_dependency_xyz'" in report.errors[0]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[dicom]\nport = "11400"\n', "dicom.port"),
        ('[api]\nport = "8000"\n', "api.port"),
        ('[tracker]\nstable_after_s = "60"\n', "tracker.stable_after_s"),
        ('[api]\nenabled = "yes"\n', "api.enabled"),
        ('[workers]\ncount = 1.5\n', "workers.count"),
        ('[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = "4242"\n',
         "destinations[0] (pacs).port"),
    ],
)
def test_strings_are_not_numbers(tmp_path: Path, body: str, key: str) -> None:
    import tomllib

    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(body), source="node.toml")
    assert f"config key '{key}': Input should be a valid" in str(info.value)


def test_string_port_stops_serve(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[dicom]\nport = "11400"\n')
    r = _mrinode("serve", "--config", str(cfg))
    assert r.returncode == 2 and "config key 'dicom.port': Input should be a valid integer." in r.stderr


def test_cross_key_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"routing": {"also_send_to": ["nowhere"]}}, source="node.toml")
    assert "(top level)" not in str(info.value) and "config key ''" not in str(info.value)
    assert "config key 'routing.also_send_to': names 'nowhere'" in str(info.value)
    with pytest.raises(ConfigError) as dup:
        parse_config({"pipelines": [{"name": "a", "function": "m:f"}, {"name": "a", "function": "m:g"}]})
    assert "config key 'pipelines': pipeline names must be unique; repeated: a." in str(dup.value)


@pytest.fixture
def echo_scp() -> Iterator[int]:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    port = _free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    assert server is not None
    try:
        yield port
    finally:
        server.shutdown()


def test_unreachable_destination_is_a_warning_not_a_refusal(tmp_path: Path, echo_scp: int) -> None:
    dead = _free_port()
    cfg = _write(tmp_path, f'''
[[destinations]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = {echo_scp}
[[destinations]]
name = "gone"
ae_title = "GONE"
host = "127.0.0.1"
port = {dead}
[[destinations]]
name = "web"
kind = "dicomweb"
url = "http://127.0.0.1:{dead}/dicom-web/studies"
[routing]
default_destinations = ["pacs"]
[[pipelines]]
name = "seg"
function = "dicom_node.pipelines.testing:run"
''')
    r = _mrinode("check", "--config", str(cfg))
    assert r.returncode == 0, r.stdout
    assert f"ok    destination 'pacs' (PACS@127.0.0.1:{echo_scp}) answers" in r.stdout
    assert "WARN  config key 'destinations[1] (gone)': not reachable now: C-ECHO to" in r.stdout
    assert "WARN  config key 'destinations[2] (web)': not reachable now: DICOMweb" in r.stdout
    assert "can start (2 warning(s))" in r.stdout


def test_routing_that_delivers_nowhere_is_said(tmp_path: Path) -> None:
    cfg = parse_config({
        "dicom": {"allowed_callers": [{"ae_title": "ORTHANC"}, {"ae_title": "OTHER"}]},
        "destinations": [{"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}],
        "pipelines": [{"name": "seg", "function": "dicom_node.pipelines.testing:run"}],
    })
    report = run_checks(cfg, reach=False)
    assert report.ok
    assert report.warnings == ["config key 'routing.default_destinations': results of studies sent by OTHER have no "
                               "destination (no dicom destination with that ae_title); set "
                               "routing.default_destinations or add the destination."]


def test_version() -> None:
    r = _mrinode("--version")
    assert r.returncode == 0 and r.stdout.strip().startswith("mrinode ")


def test_threads_left_running_are_ours_only() -> None:
    # The checks leave no thread behind (pynetdicom associations are released).
    before = {t.ident for t in threading.enumerate()}
    run_checks(parse_config({}), reach=True)
    assert {t.ident for t in threading.enumerate()} <= before


def test_a_failed_pipeline_keeps_its_last_lines_in_jobs_show(tmp_path: Path) -> None:
    """A real worker's traceback: ``jobs show`` prints its last lines whole, ``jobs list`` its last line."""
    import os

    from tests.support.mrfiles import write_mr_series
    from tests.support.node import TEST_PIPELINE, NodeProcess

    failing = {**TEST_PIPELINE, "options": {"fail": "exception"}}
    with NodeProcess(tmp_path / "node", pipelines=[failing], extra={"workers": {"max_attempts": 1}}) as node:
        study_uid, _ = write_mr_series(tmp_path / "in", 3)
        env = dict(os.environ, TCP_NODELAY="1")
        subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port), str(tmp_path / "in")],
                       check=True, capture_output=True, env=env, timeout=60)
        node.api("POST", f"/studies/{study_uid}/complete")
        job = node.wait_job(study_uid, states=("failed",), timeout=120)
        shown = _mrinode("jobs", "show", str(job["id"]), "--config", str(node.config_path)).stdout
        listed = _mrinode("jobs", "list", "--config", str(node.config_path)).stdout
    last = "RuntimeError: test pipeline asked to fail (options.fail = 'exception')"
    lines = [line.strip().removeprefix("| ").strip() for line in shown.splitlines()]  # worker.log continuation lines
    assert last in lines  # the traceback's last lines, each whole on its own line
    assert any(line.startswith('raise RuntimeError("test pipeline asked to fail') for line in lines)
    assert any(line.startswith("File ") and "testing.py" in line for line in lines)
    assert last in listed
    audit = (node.data_dir / "audit.jsonl").read_text()
    assert '"event": "job_run_failed"' in audit and '"event": "job_failed"' in audit


def test_tls_and_token_files_are_checked_before_listening(tmp_path: Path) -> None:
    import shutil as sh

    if sh.which("openssl") is None:
        pytest.skip("openssl is not installed")
    for name in ("a", "b"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                        f"{name}.crt", "-days", "2", "-subj", f"/CN={name}"], cwd=tmp_path, check=True,
                       capture_output=True)
    (tmp_path / "notpem.crt").write_text("hello")

    def errors(tls: dict[str, object], api: dict[str, object] | None = None) -> list[str]:
        cfg = parse_config({"dicom": {"tls": {"enabled": True, **tls}}, "api": api or {}}, base_dir=tmp_path)
        return run_checks(cfg, reach=False).errors

    assert errors({"cert": "a.crt", "key": "a.key"}) == []
    [missing] = errors({"cert": "nope.crt", "key": "a.key"})
    assert missing.startswith("config key 'dicom.tls.cert': cannot read") and "nope.crt" in missing
    [notpem] = errors({"cert": "notpem.crt", "key": "a.key"})
    assert notpem.startswith("config key 'dicom.tls.cert':") and "is not a PEM file" in notpem
    [mismatch] = errors({"cert": "a.crt", "key": "b.key"})
    assert mismatch.startswith("config key 'dicom.tls.cert': the certificate and key do not load together")
    (tmp_path / "empty.token").write_text("")
    [token] = errors({"cert": "a.crt", "key": "a.key"}, {"token_file": "empty.token"})
    assert token.startswith("config key 'api.token_file':") and "is empty" in token
    cfg_file = tmp_path / "node.toml"
    cfg_file.write_text('[dicom.tls]\nenabled = true\ncert = "a.crt"\nkey = "b.key"\n')
    r = _mrinode("serve", "--config", str(cfg_file))
    assert r.returncode == 2 and "config key 'dicom.tls.cert'" in r.stderr and "Traceback" not in r.stderr
