"""The console shows the routing decisions the Orthanc plugin made, read from a real Orthanc's /mrinode/decisions."""

from __future__ import annotations

import re
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.plugin.pacs_helpers import PLUGIN_SCRIPT, storescu, wait_for
from tests.support.mrfiles import write_mr_series
from tests.support.node import TEST_PIPELINE, NodeProcess
from tests.support.orthanc import OrthancServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

RULES = """
[nodes.mrinode]
modality = "mrinode"
url = "{url}"
token = "test-token"
ae_titles = ["MRINODE"]
manufacturers = ["mrinode"]

[[rules]]
name = "brain-mr"
node = "mrinode"
modality = ["MR"]
calling_ae = ["SCANNER1"]
"""


def _signed_in(node: NodeProcess) -> dict[str, str]:
    login = httpx.post(f"{node.url}/console/login", content="name=carol&token=test-token",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert login.status_code == 303
    value = re.search(r"mrinode_console=([^;]+)", login.headers["set-cookie"])
    assert value is not None
    return {"Cookie": f"mrinode_console={value.group(1)}"}


def test_routing_page_lists_the_plugins_decisions(tmp_path: Path) -> None:
    with ExitStack() as stack:
        node_port, orthanc_http, orthanc_dicom = free_port(), free_port(), free_port()
        node = stack.enter_context(NodeProcess(
            tmp_path / "node", dicom_port=node_port, pipelines=[TEST_PIPELINE],
            destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
                           "port": orthanc_dicom}],
            extra={"console": {"orthanc_url": f"http://127.0.0.1:{orthanc_http}",
                               "orthanc_auth": {"username": "orthanc", "password": "orthanc-test"}}},
        ))
        rules = tmp_path / "rules.toml"
        rules.write_text(RULES.format(url=node.url))
        headers = _signed_in(node)
        # Orthanc not up yet: the page says so, it does not fail.
        down = httpx.get(f"{node.url}/console/routing", headers=headers)
        assert down.status_code == 200 and "/mrinode/decisions: ConnectError" in down.text
        orthanc = stack.enter_context(OrthancServer(
            tmp_path / "orthanc", http_port=orthanc_http, dicom_port=orthanc_dicom,
            modalities={"mrinode": ("MRINODE", "127.0.0.1", node_port)}, python_script=PLUGIN_SCRIPT,
            extra_config={"StableAge": 1, "UserMetadata": {"MrinodeStatus": 4401},
                          "Mrinode": {"RulesFile": str(rules), "StateFile": str(tmp_path / "state.json")}},
        ))
        routed, files = write_mr_series(tmp_path / "routed", 4)
        other, other_files = write_mr_series(tmp_path / "other", 3)
        storescu(orthanc.dicom_port, files, calling="SCANNER1")
        storescu(orthanc.dicom_port, other_files, calling="ELSEWHERE")
        wait_for(lambda: len(orthanc.get("/mrinode/decisions")) >= 2, 60, "two routing decisions")
        node.wait_job(routed, timeout=120)
        time.sleep(0.5)
        page = httpx.get(f"{node.url}/console/routing", headers=headers)
        assert page.status_code == 200
        rows = re.findall(r"<tr><td>.*?</tr>", page.text, flags=re.S)
        routed_row = next(r for r in rows if routed in r)
        other_row = next(r for r in rows if other in r)
        assert ">send<" in routed_row and ">brain-mr<" in routed_row and ">mrinode<" in routed_row
        assert ">none<" in other_row
        assert routed not in node.log_path.read_text()
