"""Notifications: webhooks (and optionally e-mail) on job events (``done``, ``failed``, ``awaiting_review``).

Each ``[[notifications.webhooks]]`` entry gets a JSON POST per event it subscribes to::

    {"event": "failed", "job_id": 12, "state": "failed", "study": "uid:3f2a9c01de",
     "calling_ae": "ORTHANC", "node": "MRINODE", "time": "2026-12-06T08:01:02+00:00",
     "delivery": "<uuid>", "error": "...", "console_url": "http://127.0.0.1:8000/console/jobs/12"}

signed with HMAC-SHA256 of the exact body bytes under the entry's ``secret``, in the header
``X-Mrinode-Signature: sha256=<hex>`` (a receiver recomputes it and compares in constant
time; ``delivery`` and ``time`` let it refuse replays). A delivery that fails (network
error, timeout, a status other than 2xx) is retried after ``backoff_initial_s``, doubled
each time, up to ``max_attempts``; one given up is logged and written to the audit log
(``webhook_failed``). The study appears as its :func:`~dicom_node.logs.uid_tag` only: a
webhook may end in a chat room.

``[notifications.email]`` sends the same facts as a plain-text e-mail through SMTP
(``smtplib``; STARTTLS and login when configured), with the same retries; it is audited as
``email_delivered``, ``email_retry`` and ``email_failed``.

One sender thread serves every webhook and the e-mail (:meth:`Notifier.run`); events are queued by
:meth:`Notifier.job_event`, a :data:`dicom_node.queue.JobListener`, so the job queue never
waits on a receiver.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dicom_node.config_models import EmailConfig, WebhookConfig
from dicom_node.logs import scrub, uid_tag

if TYPE_CHECKING:
    from dicom_node.audit import AuditLog
    from dicom_node.config_models import NotificationsConfig
    from dicom_node.queue import Job

__all__ = ["SIGNATURE_HEADER", "Notifier", "sign", "verify"]

log = logging.getLogger(__name__)

#: The header that carries ``sha256=<hex>`` of the body.
SIGNATURE_HEADER = "X-Mrinode-Signature"
#: Job events a webhook may subscribe to.
NOTIFIED_EVENTS = ("done", "failed", "awaiting_review")


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for a body: ``sha256=`` and the hex HMAC-SHA256.

    Parameters
    ----------
    secret : str
        The webhook's shared secret.
    body : bytes
        The exact request body.

    Returns
    -------
    str
        ``"sha256=<64 hex digits>"``.
    """
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Whether a signature header matches a body (constant-time; for receivers and tests)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


@dataclass
class _Delivery:
    hook: WebhookConfig | EmailConfig
    index: int
    event: str
    body: bytes
    delivery: str
    job_id: int
    attempt: int = 0

    @property
    def email(self) -> bool:
        """Whether this is the e-mail (not a webhook)."""
        return isinstance(self.hook, EmailConfig)

    @property
    def where(self) -> str:
        """The configuration key of its target."""
        return "notifications.email" if self.email else f"notifications.webhooks[{self.index}]"


class Notifier:
    """Queues job events and POSTs them to the configured webhooks, with retries.

    Parameters
    ----------
    cfg : NotificationsConfig
        ``[notifications]``.
    audit : AuditLog, optional
        Receives ``webhook_failed`` (given up) and ``webhook_delivered`` events.
    node : str
        This node's AE title (in the payload).
    console_url : str, optional
        The console's root URL; each payload links to its job's page.
    """

    def __init__(self, cfg: NotificationsConfig, audit: AuditLog | None = None, *, node: str = "",
                 console_url: str | None = None) -> None:
        self.cfg = cfg
        self.audit = audit
        self.node = node
        self.console_url = console_url.rstrip("/") if console_url else None
        self._heap: list[tuple[float, int, _Delivery]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._inflight = 0

    @property
    def enabled(self) -> bool:
        """Whether any webhook or the e-mail is configured."""
        return bool(self.cfg.webhooks) or self.cfg.email is not None

    def payload(self, event: str, job: Job, facts: dict[str, Any]) -> dict[str, Any]:
        """The JSON object sent for one event (no raw UID, no patient data)."""
        out: dict[str, Any] = {
            "event": event, "job_id": job.id, "state": job.state, "study": uid_tag(job.study_uid),
            "calling_ae": job.calling_ae, "node": self.node, "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        error = facts.get("error") or (job.last_error if event == "failed" else None)
        if error:
            out["error"] = scrub(str(error))
        if "outputs" in facts:
            out["outputs"] = facts["outputs"]
        if self.console_url:
            out["console_url"] = f"{self.console_url}/jobs/{job.id}"
        return out

    def job_event(self, event: str, job: Job, facts: dict[str, Any]) -> None:
        """Queue a job event for every webhook that subscribes to it (a :data:`~dicom_node.queue.JobListener`)."""
        if event not in NOTIFIED_EVENTS:
            return
        for i, hook in enumerate(self.cfg.webhooks):
            if event not in hook.events:
                continue
            delivery = uuid.uuid4().hex
            body = json.dumps({**self.payload(event, job, facts), "delivery": delivery}, sort_keys=True).encode()
            self._push(time.monotonic(), _Delivery(hook, i, event, body, delivery, job.id))
        email = self.cfg.email
        if email is not None and event in email.events:
            delivery = uuid.uuid4().hex
            body = json.dumps({**self.payload(event, job, facts), "delivery": delivery}, sort_keys=True).encode()
            self._push(time.monotonic(), _Delivery(email, 0, event, body, delivery, job.id))

    def _push(self, due: float, d: _Delivery) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), d))
            self._cond.notify()

    def pending(self) -> int:
        """Deliveries queued, being attempted or waiting for a retry."""
        with self._cond:
            return len(self._heap) + self._inflight

    def post(self, d: _Delivery) -> str | None:
        """Make one attempt; ``None`` on a 2xx answer (an accepted e-mail), else why not."""
        if isinstance(d.hook, EmailConfig):
            return self._mail(d.hook, d)
        import httpx

        headers = {"Content-Type": "application/json", "User-Agent": "mrinode-webhook",
                   "X-Mrinode-Event": d.event, "X-Mrinode-Delivery": d.delivery}
        if d.hook.secret:
            headers[SIGNATURE_HEADER] = sign(d.hook.secret, d.body)
        try:
            r = httpx.post(d.hook.url, content=d.body, headers=headers, timeout=self.cfg.timeout_s)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"

    def _mail(self, cfg: EmailConfig, d: _Delivery) -> str | None:
        import smtplib
        from email.message import EmailMessage

        facts = json.loads(d.body)
        msg = EmailMessage()
        msg["Subject"] = f"[mrinode {facts.get('node', '')}] job {facts['job_id']} {facts['event'].replace('_', ' ')}"
        msg["From"] = cfg.from_addr
        msg["To"] = ", ".join(cfg.to)
        msg["X-Mrinode-Delivery"] = d.delivery
        msg.set_content("\n".join(f"{k}: {v}" for k, v in facts.items()) + "\n")
        try:
            with smtplib.SMTP(cfg.host, cfg.port, timeout=self.cfg.timeout_s) as smtp:
                if cfg.starttls:
                    smtp.starttls()
                if cfg.username:
                    smtp.login(cfg.username, cfg.password or "")
                smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def _attempt(self, d: _Delivery) -> None:
        d.attempt += 1
        why = self.post(d)
        where, kind = d.where, "email" if d.email else "webhook"
        if why is None:
            if self.audit is not None:
                self.audit.record(f"{kind}_delivered", job=d.job_id, notify=d.event, target=where, attempt=d.attempt)
            return
        if d.attempt >= self.cfg.max_attempts:
            log.error("%s: %s of job %d given up after %d attempts: %s", where, d.event, d.job_id, d.attempt, why)
            if self.audit is not None:
                self.audit.record(f"{kind}_failed", job=d.job_id, notify=d.event, target=where, attempts=d.attempt,
                                  error=scrub(why))
            return
        delay = self.cfg.backoff_initial_s * 2 ** (d.attempt - 1)
        log.warning("%s: %s of job %d, attempt %d/%d failed (%s); retrying in %.1f s", where, d.event, d.job_id,
                    d.attempt, self.cfg.max_attempts, why, delay)
        if self.audit is not None:
            self.audit.record(f"{kind}_retry", job=d.job_id, notify=d.event, target=where, attempt=d.attempt,
                              error=scrub(why), retry_in_s=delay)
        self._push(time.monotonic() + delay, d)

    def run(self, stop: threading.Event) -> None:
        """The sender thread's loop, until ``stop`` (deliveries still waiting are dropped, logged)."""
        while not stop.is_set():
            with self._cond:
                now = time.monotonic()
                if not self._heap or self._heap[0][0] > now:
                    wait = min(self._heap[0][0] - now, 0.5) if self._heap else 0.5
                    self._cond.wait(timeout=wait)
                    continue
                _, _, d = heapq.heappop(self._heap)
                self._inflight += 1
            try:
                self._attempt(d)
            except Exception:  # never let one delivery end the thread
                log.exception("notification of job %d failed unexpectedly", d.job_id)
            finally:
                with self._cond:
                    self._inflight -= 1
        left = self.pending()
        if left:
            log.warning("stopping with %d webhook deliveries not sent", left)

    def wake(self) -> None:
        """Wake the sender thread (at shutdown)."""
        with self._cond:
            self._cond.notify_all()
