"""The operator console in a real browser (Debian chromium + Playwright), against a real node.

An operator signs in with the API token, sees a study arrive and its job go through the
pipeline, approves the held result (review before export), sees the export fail while the
PACS is down, retries it once the PACS is up, approves again and sees it done; the PACS
really receives the SEG. Screenshots of every step are saved as artefacts.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.browser import ARTEFACTS, chromium_page
from tests.support.mrfiles import write_mr_series
from tests.support.node import TEST_PIPELINE, NodeProcess
from tests.support.orthanc import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no chromium")]


class StorageSCP:
    """A pynetdicom C-STORE SCP on loopback that keeps the SOP Instance UIDs it receives."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[str] = []
        self.server: Any = None

    def start(self) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        def on_store(event: Any) -> int:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
            return 0x0000

        ae = AE(ae_title="PACS")
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context("1.2.840.10008.1.1")  # Verification (the console's test button)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


@pytest.fixture
def pacs() -> Iterator[StorageSCP]:
    scp = StorageSCP(free_port())
    try:
        yield scp
    finally:
        scp.stop()


def _shot(page: Any, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def _row_state(page: Any, node: NodeProcess, job_id: int, wanted: str, timeout: float = 90.0) -> None:
    """Reload the job's page until its state badge reads ``wanted``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page.goto(f"{node.url}/console/jobs/{job_id}")
        if page.locator("h1 .state").inner_text().strip() == wanted.replace("_", " "):
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not reach {wanted}: {page.locator('h1').inner_text()}\n{node.log_tail()}")


def test_operator_signs_in_reviews_approves_and_retries(tmp_path: Path, pacs: StorageSCP) -> None:
    # optional sequences make the worker identify every series (headers only), which the study page shows
    identify = {**TEST_PIPELINE, "optional_sequences": ["T1", "T2", "FLAIR", "PD"],
                "options": {**TEST_PIPELINE["options"], "use_pixels": False}}
    node = NodeProcess(
        tmp_path / "node", pipelines=[identify],
        destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
        extra={"routing": {"default_destinations": ["pacs"]},
               "export": {"require_approval": True, "max_attempts": 2, "backoff_initial_s": 0.2,
                          "backoff_max_s": 0.5, "timeout_s": 5.0}},
    )
    with node, chromium_page() as page:
        # Not signed in: every console page sends the browser to the login page.
        page.goto(f"{node.url}/console/jobs")
        assert "/console/login" in page.url
        page.fill("#name", "alice")
        page.fill("#token", "wrong")
        page.click("button[type=submit]")
        assert page.locator("[role=alert]").is_visible()
        page.fill("#name", "alice")
        page.fill("#token", node.token or "")
        _shot(page, "01-login")
        page.click("button[type=submit]")
        assert page.url.endswith("/console/jobs")
        cookie = next(c for c in page.context.cookies() if c["name"] == "mrinode_console")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        page.goto(f"{node.url}/console/")
        assert page.locator("#received-today").inner_text() == "0"

        # A study arrives; the dashboard counts it, the studies page shows its full UID.
        study_uid, _ = write_mr_series(tmp_path / "in", 6)
        env = dict(os.environ, TCP_NODELAY="1")
        r = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port),
                            str(tmp_path / "in")], capture_output=True, text=True, env=env, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        page.goto(f"{node.url}/console/")
        assert page.locator("#received-today").inner_text() == "1"
        page.goto(f"{node.url}/console/studies")
        assert page.get_by_text(study_uid, exact=True).is_visible()
        job_id = node.api("POST", f"/studies/{study_uid}/complete").json()["job_id"]

        # The job goes through the pipeline and waits for review; nothing reaches the PACS yet.
        _row_state(page, node, job_id, "awaiting_review")
        timeline = page.locator("#timeline").inner_text()
        for step in ("study received", "study complete", "queued", "pipelines started", "pipelines finished",
                     "awaiting review"):
            assert step in timeline, timeline
        assert re.search(r"pipelines finished\s+[\d.]+ s, 1 result object", timeline), timeline
        assert timeline.index("study received") < timeline.index("study complete") < timeline.index("awaiting review")
        _shot(page, "02-awaiting-review")
        page.goto(f"{node.url}/console/studies/{study_uid}")
        sequence = page.locator("td.sequence").first.inner_text()
        confidence = page.locator("td.sequence + td").first.inner_text()
        assert sequence in ("T1", "T1C", "T2", "FLAIR", "PD", "DWI", "ADC", "SWI", "OTHER", "UNKNOWN"), sequence
        assert re.fullmatch(r"[01]\.\d\d", confidence), confidence
        _shot(page, "02b-study")
        page.goto(f"{node.url}/console/")
        assert page.locator("#held").inner_text() == "1"
        _shot(page, "03-dashboard")
        assert pacs.received == []

        # Approve; the PACS is down, so the export fails (2 attempts) and the job is failed.
        page.goto(f"{node.url}/console/jobs/{job_id}")
        page.click("button:has-text('Approve')")
        assert f"job {job_id} approved" in page.locator(".flash").inner_text()
        _row_state(page, node, job_id, "failed", timeout=60)
        assert "association failed" in page.locator("#last-error").inner_text()
        assert "export attempt 1 failed" in page.locator("#timeline").inner_text()
        _shot(page, "04-failed")

        # The PACS comes up; the destinations page's test button says so; retry, approve again, done.
        pacs.start()
        page.goto(f"{node.url}/console/destinations")
        page.click("button:has-text('Test')")
        assert "pacs: answers" in page.locator(".flash").inner_text()
        page.goto(f"{node.url}/console/jobs?state=failed")
        page.locator(f"tr[data-job='{job_id}'] button:has-text('Retry')").click()
        _row_state(page, node, job_id, "awaiting_review")  # a re-send is reviewed again
        page.click("button:has-text('Approve')")
        _row_state(page, node, job_id, "done", timeout=60)
        _shot(page, "05-done")
        page.goto(f"{node.url}/console/")
        _shot(page, "06-dashboard-after")
        page.goto(f"{node.url}/console/models")
        assert "brain-tumour-demo" in page.content()
        _shot(page, "07-models")

    assert len(pacs.received) >= 1  # the SEG reached the PACS
    audit = (node.data_dir / "audit.jsonl").read_text()
    assert audit.count('"event": "job_approved"') == 2 and '"by": "console:alice"' in audit
    assert '"event": "console_retry"' in audit and study_uid not in audit
    assert study_uid not in node.log_path.read_text()  # the console showed it; no log line holds it


def test_console_refuses_without_a_session(tmp_path: Path) -> None:
    import httpx

    with NodeProcess(tmp_path / "node") as node:
        r = httpx.get(f"{node.url}/console/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
        forged = httpx.get(f"{node.url}/console/", cookies={"mrinode_console": "YWxpY2U.9999999999.00"},
                           follow_redirects=False)
        assert forged.status_code == 303
        assert httpx.post(f"{node.url}/console/jobs/1/approve", follow_redirects=False).status_code == 303
        # The REST API stays behind the bearer token.
        assert httpx.get(f"{node.url}/jobs").status_code == 401
        login = httpx.post(f"{node.url}/console/login", content="name=bob&token=test-token",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
        assert login.status_code == 303
        value = login.cookies.get("mrinode_console") or re.search(r"mrinode_console=([^;]+)",
                                                                   login.headers["set-cookie"]).group(1)  # type: ignore[union-attr]
        ok = httpx.get(f"{node.url}/console/", headers={"Cookie": f"mrinode_console={value}"})
        assert ok.status_code == 200 and "Dashboard" in ok.text
        # A form without the session's CSRF value is refused.
        stale = httpx.post(f"{node.url}/console/jobs/1/approve", content="csrf=nope",
                           headers={"Cookie": f"mrinode_console={value}",
                                    "Content-Type": "application/x-www-form-urlencoded"})
        assert stale.status_code == 403
        threading.Event().wait(0)


def test_console_without_a_token_asks_only_a_name(tmp_path: Path) -> None:
    import httpx

    with NodeProcess(tmp_path / "node", token=None) as node:
        page = httpx.get(f"{node.url}/console/login")
        assert page.status_code == 200 and 'name="token"' not in page.text and "no API token" in page.text
        assert httpx.get(f"{node.url}/console/", follow_redirects=False).status_code == 303  # still a sign-in
        login = httpx.post(f"{node.url}/console/login", content="name=erin",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
        value = re.search(r"mrinode_console=([^;]+)", login.headers["set-cookie"])
        assert login.status_code == 303 and value is not None
        ok = httpx.get(f"{node.url}/console/", headers={"Cookie": f"mrinode_console={value.group(1)}"})
        assert ok.status_code == 200 and "erin" in ok.text
    assert '"by": "console:erin"' in (node.data_dir / "audit.jsonl").read_text()
