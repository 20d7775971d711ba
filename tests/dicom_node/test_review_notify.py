"""Review before export, the audit trail of failures and retries, webhooks, and ``mrinode jobs`` output (issue 21)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dicom_node.audit import AuditLog
from dicom_node.config import parse_config
from dicom_node.logs import uid_tag
from dicom_node.notify import SIGNATURE_HEADER, Notifier, verify
from dicom_node.queue import JobQueue
from dicom_node.store import InstanceRecord, Store

STUDY = "1.2.826.0.1.3680043.8.498.11112222333344445555"


def _rec(sop: str) -> InstanceRecord:
    return InstanceRecord(sop, STUDY, STUDY + ".1", "1.2.840.10008.5.1.4.1.1.4", "MR", "T1", "1.2.840.10008.1.2.1",
                          "/x/" + sop, 10, "ORTHANC")


def _queue(tmp_path: Path, require_approval: bool) -> tuple[Store, JobQueue, AuditLog]:
    store = Store(tmp_path / "node.db")
    queue = JobQueue(store, require_approval=require_approval)
    audit = AuditLog(tmp_path / "audit.jsonl")
    queue.listeners.append(audit.job_event)
    return store, queue, audit


def _processed_job(store: Store, queue: JobQueue, tmp_path: Path) -> int:
    store.add_instance(_rec(STUDY + ".1.1"))
    with store.transaction() as c:
        job_id = JobQueue.enqueue_in(c, STUDY, "ORTHANC", time.time())
    assert job_id is not None
    job = queue.claim_next()
    assert job is not None
    out = tmp_path / "seg.dcm"
    out.write_bytes(b"x")
    queue.set_processed(job_id, tmp_path, [out], {}, {"pipeline_s": 1.0})
    return job_id


def test_held_results_wait_for_approval(tmp_path: Path) -> None:
    store, queue, audit = _queue(tmp_path, require_approval=True)
    job_id = _processed_job(store, queue, tmp_path)
    job = queue.get(job_id)
    assert job is not None and job.state == "awaiting_review"
    assert queue.claim_export() is None  # nothing leaves before an operator says so
    with pytest.raises(ValueError, match="awaiting review"):
        queue.retry(job_id)  # a re-send cannot bypass the review
    approved = queue.approve(job_id, "console:alice")
    assert approved.state == "exporting"
    claimed = queue.claim_export()
    assert claimed is not None and claimed.id == job_id
    with pytest.raises(ValueError, match="not awaiting_review"):
        queue.approve(job_id, "console:alice")
    events = [e for e in audit.read() if e["event"] == "job_approved"]
    assert len(events) == 1 and events[0]["by"] == "console:alice" and events[0]["job"] == job_id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", events[0]["time"])
    assert events[0]["study"] == uid_tag(STUDY)
    assert STUDY not in audit.path.read_text()


def test_rejected_results_are_not_sent(tmp_path: Path) -> None:
    store, queue, audit = _queue(tmp_path, require_approval=True)
    job_id = _processed_job(store, queue, tmp_path)
    job = queue.reject(job_id, "console:bob", "tumour outline wrong")
    assert job.state == "rejected" and job.last_error == "rejected by console:bob: tumour outline wrong"
    assert queue.claim_export() is None
    [event] = [e for e in audit.read() if e["event"] == "job_rejected"]
    assert event["by"] == "console:bob" and event["reason"] == "tumour outline wrong"
    # A re-send after a rejection goes through review again.
    assert queue.retry(job_id).state == "awaiting_review"


def test_without_review_results_go_straight_to_export(tmp_path: Path) -> None:
    store, queue, _ = _queue(tmp_path, require_approval=False)
    job_id = _processed_job(store, queue, tmp_path)
    job = queue.get(job_id)
    assert job is not None and job.state == "exporting"


def test_every_failure_and_retry_is_audited(tmp_path: Path) -> None:
    store, queue, audit = _queue(tmp_path, require_approval=False)
    store.add_instance(_rec(STUDY + ".1.1"))
    with store.transaction() as c:
        job_id = JobQueue.enqueue_in(c, STUDY, "ORTHANC", time.time())
    assert job_id is not None
    queue.claim_next()
    queue.set_run_failed(job_id, f"pipeline process failed:\nFile x\nValueError: bad study {STUDY}", retry=True)
    queue.claim_next(now=time.time() + 10)
    out = tmp_path / "sr.dcm"
    out.write_bytes(b"x")
    queue.set_processed(job_id, tmp_path, [out], {}, {})
    queue.set_export_failed(job_id, "destination 'pacs': association failed", time.time() + 2)
    queue.set_export_failed(job_id, "destination 'pacs': association failed", None)
    queue.retry(job_id)
    events = [(e["event"], e.get("retried")) for e in audit.read()]
    assert events == [("job_run_failed", True), ("job_export_failed", True), ("job_export_failed", False),
                      ("job_failed", None), ("job_retried", None)]
    text = audit.path.read_text()
    assert STUDY not in text and "ValueError: bad study uid:" in text  # errors scrubbed, not dropped


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        status = 503 if type(self).fail_first > 0 else 204
        type(self).fail_first -= 1
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"received": [], "fail_first": 2})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_is_signed_retried_and_audited(tmp_path: Path, hook_server: tuple[str, type[_Hook]]) -> None:
    url, handler = hook_server
    cfg = parse_config({"notifications": {"backoff_initial_s": 0.05, "max_attempts": 4, "webhooks": [
        {"url": url, "secret": "s3cret", "events": ["failed", "awaiting_review"]},
        {"url": url.replace("/hook", "/other"), "events": ["done"]},
    ]}})
    store, queue, audit = _queue(tmp_path, require_approval=True)
    notifier = Notifier(cfg.notifications, audit, node="MRINODE", console_url="http://127.0.0.1:8000/console")
    queue.listeners.append(notifier.job_event)
    stop = threading.Event()
    t = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
    t.start()
    try:
        job_id = _processed_job(store, queue, tmp_path)  # awaiting_review: to the first webhook only
        deadline = time.monotonic() + 20
        while notifier.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        stop.set()
        notifier.wake()
        t.join(10)
    assert len(handler.received) == 3  # two 503 answers, then 204
    bodies = {body for _, body in handler.received}
    assert len(bodies) == 1  # the same delivery each time
    headers, body = handler.received[-1]
    assert verify("s3cret", body, headers[SIGNATURE_HEADER])
    assert not verify("wrong", body, headers[SIGNATURE_HEADER])
    payload = json.loads(body)
    assert payload["event"] == "awaiting_review" and payload["job_id"] == job_id and payload["node"] == "MRINODE"
    assert payload["study"] == uid_tag(STUDY) and STUDY not in body.decode()
    assert payload["console_url"] == f"http://127.0.0.1:8000/console/jobs/{job_id}"
    assert headers["X-Mrinode-Event"] == "awaiting_review"
    kinds = [e["event"] for e in audit.read() if e["event"].startswith("webhook")]
    assert kinds == ["webhook_retry", "webhook_retry", "webhook_delivered"]


def test_webhook_given_up_is_audited(tmp_path: Path) -> None:
    cfg = parse_config({"notifications": {"backoff_initial_s": 0.01, "max_attempts": 2, "timeout_s": 1.0,
                                          "webhooks": [{"url": "http://127.0.0.1:9/none"}]}})
    audit = AuditLog(tmp_path / "audit.jsonl")
    notifier = Notifier(cfg.notifications, audit)
    store, queue, _ = _queue(tmp_path, require_approval=False)
    queue.listeners.append(notifier.job_event)
    stop = threading.Event()
    t = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
    t.start()
    store.add_instance(_rec(STUDY + ".1.1"))
    with store.transaction() as c:
        job_id = JobQueue.enqueue_in(c, STUDY, "ORTHANC", time.time())
    assert job_id is not None
    queue.claim_next()
    queue.set_run_failed(job_id, "boom", retry=False)
    deadline = time.monotonic() + 20
    while not any(e["event"] == "webhook_failed" for e in audit.read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    notifier.wake()
    t.join(10)
    [failed] = [e for e in audit.read() if e["event"] == "webhook_failed"]
    assert failed["attempts"] == 2 and failed["notify"] == "failed" and failed["target"] == "notifications.webhooks[0]"


def test_jobs_show_prints_iso_times_and_the_whole_error(tmp_path: Path) -> None:
    cfg_path = tmp_path / "node.toml"
    cfg_path.write_text(f'[node]\ndata_dir = "{tmp_path / "var"}"\n')
    cfg = parse_config({"node": {"data_dir": str(tmp_path / "var")}})
    cfg.node.data_dir.mkdir(parents=True)
    store = Store(cfg.db_path)
    queue = JobQueue(store)
    store.add_instance(_rec(STUDY + ".1.1"))
    with store.transaction() as c:
        failed = JobQueue.enqueue_in(c, STUDY, "ORTHANC", time.time())
    assert failed is not None
    queue.claim_next()
    error = ("pipeline process failed (exit code 1): \n  File \"/opt/mrinode/models/bundle.py\", line 407, in load\n"
             "    raise BundleError(\nmodels.bundle.BundleError: bundle 'brain-tumour-demo': weights SHA-256 differs")
    queue.set_run_failed(failed, error, retry=False)
    store.add_instance(_rec(STUDY + ".2.1"))
    with store.transaction() as c:
        c.execute("UPDATE studies SET state='open'")
        done = JobQueue.enqueue_in(c, STUDY, "ORTHANC", time.time())
    assert done is not None
    queue.claim_next()
    out = tmp_path / "seg.dcm"
    out.write_bytes(b"x")
    queue.set_processed(done, tmp_path, [out], {}, {})
    queue.set_export_failed(done, "destination 'pacs': association failed", time.time() + 100)
    queue.set_done(done)
    finished = queue.get(done)
    assert finished is not None and finished.next_attempt_at == 0.0  # the REST API shows nothing due either
    store.close()

    def mrinode(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "dicom_node", "jobs", *args, "--config", str(cfg_path)],
                           capture_output=True, text=True, timeout=60, check=True)
        return r.stdout

    shown = mrinode("show", str(failed))
    for line in error.splitlines():
        assert f"  {line}" in shown  # every line in full
    view = json.loads(mrinode("show", str(done), "--json"))
    assert "next_attempt_at" not in view and view["state"] == "done"
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
    assert re.fullmatch(iso, view["created_at"]) and re.fullmatch(iso, view["finished_at"])
    listing = mrinode("list")
    assert "models.bundle.BundleError: bundle 'brain-tumour-demo': weights SHA-256 differs" in listing


class _Smtp:
    """A minimal SMTP server on loopback (enough for smtplib: EHLO, MAIL, RCPT, DATA, QUIT) keeping messages."""

    def __init__(self, refuse_first: int = 0) -> None:
        import socketserver

        outer = self
        self.messages: list[tuple[str, list[str], str]] = []
        self.refuse = refuse_first

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                def say(line: str) -> None:
                    self.wfile.write(line.encode() + b"\r\n")

                if outer.refuse > 0:
                    outer.refuse -= 1
                    say("421 try later")
                    return
                say("220 localhost test SMTP")
                sender, rcpts = "", []
                while True:
                    raw = self.rfile.readline()
                    if not raw:
                        return
                    cmd = raw.decode().strip()
                    verb = cmd.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        say("250 localhost")
                    elif verb == "MAIL":
                        sender = cmd.split(":", 1)[1].strip(" <>")
                        say("250 OK")
                    elif verb == "RCPT":
                        rcpts.append(cmd.split(":", 1)[1].strip(" <>"))
                        say("250 OK")
                    elif verb == "DATA":
                        say("354 go on")
                        lines = []
                        while (line := self.rfile.readline().decode()) not in (".\r\n", ""):
                            lines.append(line)
                        outer.messages.append((sender, rcpts, "".join(lines)))
                        say("250 queued")
                    elif verb == "QUIT":
                        say("221 bye")
                        return
                    else:
                        say("250 OK")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_email_is_sent_through_smtp_with_retries(tmp_path: Path) -> None:
    smtp = _Smtp(refuse_first=1)
    try:
        cfg = parse_config({"notifications": {"backoff_initial_s": 0.05, "email": {
            "host": "127.0.0.1", "port": smtp.port, "from_addr": "mrinode@example.org",
            "to": ["pacs-admin@example.org", "ai@example.org"]}}})
        store, queue, audit = _queue(tmp_path, require_approval=True)
        notifier = Notifier(cfg.notifications, audit, node="MRINODE", console_url="http://127.0.0.1:8000/console")
        queue.listeners.append(notifier.job_event)
        assert notifier.enabled
        stop = threading.Event()
        t = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
        t.start()
        job_id = _processed_job(store, queue, tmp_path)  # awaiting_review: one of the default e-mail events
        queue.approve(job_id, "console:alice")
        queue.claim_export()
        queue.set_done(job_id)  # "done" is not among the e-mail's default events
        deadline = time.monotonic() + 20
        while not any(e["event"] == "email_delivered" for e in audit.read()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        notifier.wake()
        t.join(10)
    finally:
        smtp.close()
    [(sender, rcpts, text)] = smtp.messages
    assert sender == "mrinode@example.org" and rcpts == ["pacs-admin@example.org", "ai@example.org"]
    assert f"Subject: [mrinode MRINODE] job {job_id} awaiting review" in text
    assert f"console_url: http://127.0.0.1:8000/console/jobs/{job_id}" in text and STUDY not in text
    kinds = [e["event"] for e in audit.read() if e["event"].startswith("email")]
    assert kinds == ["email_retry", "email_delivered"]
