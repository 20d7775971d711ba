"""The console's models page: installed bundles, and for a pipeline served from a registry its versions and the promoted one."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from models.versions import ModelRegistry
from tests.support.node import NodeProcess

pytestmark = pytest.mark.e2e
DEMO = Path(__file__).resolve().parents[2] / "models" / "bundles" / "brain-tumour-demo"


def test_models_page_marks_the_promoted_registry_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    first = registry.register(DEMO, note="shipped")
    second = registry.register(DEMO, note="retrained on 2026 corrections")
    registry.promote("brain-tumour-demo", first.version, why="initial")
    registry.promote("brain-tumour-demo", second.version, why="gate passed")
    served = registry.serving_path("brain-tumour-demo")
    pipeline = {"name": "brain-tumour", "function": "dicom_node.pipelines.tumour:run",
                "options": {"model": str(served)}}
    with NodeProcess(tmp_path / "node", pipelines=[pipeline]) as node:
        login = httpx.post(f"{node.url}/console/login", content="name=dana&token=test-token",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
        cookie = re.search(r"mrinode_console=([^;]+)", login.headers["set-cookie"])
        assert cookie is not None
        page = httpx.get(f"{node.url}/console/models", headers={"Cookie": f"mrinode_console={cookie.group(1)}"})
    assert page.status_code == 200
    table = page.text.split('<table class="registry">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>(.*?)</td>.*?</tr>", table, flags=re.S)
    assert rows == [second.version, first.version]  # newest first
    promoted_row = next(r for r in re.findall(r"<tr>.*?</tr>", table, flags=re.S) if "promoted" in r)
    assert second.version in promoted_row and "retrained on 2026 corrections" in promoted_row
    assert "gate passed" in page.text and "Registry versions of brain-tumour-demo" in page.text
