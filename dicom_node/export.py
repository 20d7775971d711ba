"""Export: deliver a job's result files by C-STORE SCU and/or DICOMweb STOW-RS.

Destinations come from :meth:`dicom_node.config.NodeConfig.destinations_for` (default:
the ``dicom`` destination whose AE title is the AE that sent the study). Each destination
kind names its sender in its typed configuration
(:data:`dicom_node.config_models.DESTINATION_KINDS`); :func:`deliver` calls it. A failed
attempt is retried after an exponential backoff (``export.backoff_initial_s`` doubled
per attempt, capped at ``export.backoff_max_s``); after ``export.max_attempts`` the job
is ``failed`` with the reason and its result files stay for ``mrinode jobs retry``.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_node.claim_loop import claim_loop
from dicom_node.logs import uid_tag

if TYPE_CHECKING:
    from dicom_node.audit import AuditLog
    from dicom_node.config import DestinationConfig, NodeConfig
    from dicom_node.config_models import DicomDestination, DicomWebDestination
    from dicom_node.metrics import NodeMetrics
    from dicom_node.queue import Job, JobQueue

__all__ = ["ExportError", "Exporter", "backoff_delay", "deliver", "send_dicom", "send_dicomweb"]

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """A delivery attempt failed; the message names the destination and the reason."""


def backoff_delay(attempt: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    return float(min(initial_s * (2 ** max(attempt - 1, 0)), max_s))


def _meta(path: Path) -> tuple[str, str, str]:
    from pydicom.filereader import read_file_meta_info

    meta = read_file_meta_info(path)
    return str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID), str(meta.TransferSyntaxUID)


def deliver(dest: DestinationConfig, paths: list[Path], *, calling_ae: str, timeout_s: float) -> list[str]:
    """Deliver files to one destination with the sender its kind registers.

    Parameters
    ----------
    dest : DestinationConfig
        A typed destination (its class names its sender).
    paths : list of Path
        Part 10 files.
    calling_ae : str
        This node's AE title (for senders that associate).
    timeout_s : float
        Network timeout.

    Returns
    -------
    list of str
        The SOP Instance UIDs delivered.
    """
    module, _, attr = type(dest).sender.partition(":")
    send: Callable[..., list[str]] = getattr(importlib.import_module(module), attr)
    return send(dest, paths, calling_ae=calling_ae, timeout_s=timeout_s)


def send_dicom(dest: DicomDestination, paths: list[Path], *, calling_ae: str, timeout_s: float) -> list[str]:
    """C-STORE files to a DICOM destination over one association.

    Returns
    -------
    list of str
        The SOP Instance UIDs stored.

    Raises
    ------
    ExportError
        If the association fails or any C-STORE is not answered with success or warning.
    """
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE, evt

    from dicom_node.scp import set_nodelay

    metas = [_meta(p) for p in paths]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = min(timeout_s, 10.0)
    for sop_class, ts in sorted({(m[0], m[2]) for m in metas}):
        ae.add_requested_context(sop_class, sorted({ts, str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}))
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])
    if not assoc.is_established:
        raise ExportError(f"destination {dest.name!r} ({dest.address}): association "
                          f"{'rejected' if assoc.is_rejected else 'failed'}")
    sent: list[str] = []
    try:
        for path, (_, sop_uid, _) in zip(paths, metas, strict=True):
            status = assoc.send_c_store(path)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code == -1:
                raise ExportError(f"destination {dest.name!r}: no response to the C-STORE of {path.name}")
            if code != 0x0000 and not (0xB000 <= code <= 0xBFFF):
                comment = str(getattr(status, "ErrorComment", "") or "")
                raise ExportError(f"destination {dest.name!r}: C-STORE of {path.name} answered 0x{code:04X} {comment}".strip())
            sent.append(sop_uid)
    finally:
        if assoc.is_established:
            assoc.release()
    return sent


def send_dicomweb(dest: DicomWebDestination, paths: list[Path], *, calling_ae: str, timeout_s: float) -> list[str]:
    """STOW-RS the files to a DICOMweb studies endpoint in one multipart request (``calling_ae`` unused).

    Raises
    ------
    ExportError
        On a network error or an HTTP status other than 200/202.
    """
    import httpx

    boundary = f"mrinode-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    sops = []
    for p in paths:
        sops.append(_meta(p)[1])
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p.read_bytes() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    auth: Any = None
    if dest.auth is not None:
        if dest.auth.token:
            headers["Authorization"] = f"Bearer {dest.auth.token}"
        elif dest.auth.username is not None:
            auth = (dest.auth.username, dest.auth.password or "")
    try:
        r = httpx.post(dest.url, content=body, headers=headers, auth=auth, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ExportError(f"destination {dest.name!r} ({dest.url}): {type(exc).__name__}: {exc}") from None
    if r.status_code not in (200, 202):
        raise ExportError(f"destination {dest.name!r} ({dest.url}): HTTP {r.status_code} {r.text[:200]}")
    return sops


class Exporter:
    """The export loop (one thread in the ``serve`` process).

    Parameters
    ----------
    cfg : NodeConfig
        The configuration (``[export]``, ``[[destinations]]``, ``[routing]``).
    queue : JobQueue
        The job queue.
    metrics : NodeMetrics
        Objects sent, export failures, export durations.
    audit : AuditLog
        Receives ``object_sent`` events.
    """

    def __init__(self, cfg: NodeConfig, queue: JobQueue, metrics: NodeMetrics, audit: AuditLog) -> None:
        self.cfg = cfg
        self.queue = queue
        self.metrics = metrics
        self.audit = audit
        self.wake = threading.Event()

    def export_job(self, job: Job) -> bool:
        """Make one delivery attempt of a job's results.

        Returns
        -------
        bool
            Whether every result reached every destination (the job is then ``done``).
        """
        paths = [Path(p) for p in job.outputs]
        t0 = time.monotonic()
        try:
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise ExportError(f"result files are missing: {', '.join(missing[:3])}")
            dests = self.cfg.destinations_for(job.calling_ae) if paths else []
            if paths and not dests:
                raise ExportError(f"no destination for results of a study sent by {job.calling_ae!r}: add a "
                                  "[[destinations]] entry with that ae_title or set routing.default_destinations")
            for dest in dests:
                try:
                    sops = deliver(dest, paths, calling_ae=self.cfg.node.ae_title,
                                   timeout_s=self.cfg.export.timeout_s)
                except ExportError:
                    self.metrics.export_failures.labels(destination=dest.name).inc()
                    raise
                except (OSError, ValueError) as exc:
                    self.metrics.export_failures.labels(destination=dest.name).inc()
                    raise ExportError(f"destination {dest.name!r}: {type(exc).__name__}: {exc}") from None
                for sop in sops:
                    self.metrics.objects_sent.labels(destination=dest.name).inc()
                    self.audit.record("object_sent", job=job.id, study=uid_tag(job.study_uid), sop=uid_tag(sop),
                                      destination=dest.name)
        except ExportError as exc:
            attempt = job.export_attempts + 1
            if attempt >= self.cfg.export.max_attempts:
                log.error("job %d: export attempt %d/%d failed, giving up: %s", job.id, attempt,
                          self.cfg.export.max_attempts, exc)
                self.queue.set_export_failed(job.id, f"export failed after {attempt} attempts: {exc}", None)
                self.metrics.jobs_finished.labels(state="failed").inc()
            else:
                delay = backoff_delay(attempt, self.cfg.export.backoff_initial_s, self.cfg.export.backoff_max_s)
                log.warning("job %d: export attempt %d/%d failed, retrying in %.1f s: %s", job.id, attempt,
                            self.cfg.export.max_attempts, delay, exc)
                self.queue.set_export_failed(job.id, str(exc), time.time() + delay)
            return False
        seconds = time.monotonic() - t0
        self.metrics.job_stage_seconds.labels(stage="export").observe(seconds)
        self.metrics.jobs_finished.labels(state="done").inc()
        self.queue.set_done(job.id, {**job.durations, "export_s": round(seconds, 3)})
        log.info("job %d (study %s): done, %d objects delivered", job.id, uid_tag(job.study_uid), len(paths))
        return True

    def run(self, stop: threading.Event) -> None:
        """The export thread's loop, until ``stop``."""
        claim_loop(
            stop,
            self.wake,
            self.queue.claim_export,
            self.export_job,
            lambda job, exc: self.queue.set_export_failed(
                job.id, f"export error: {exc}", time.time() + self.cfg.export.backoff_initial_s
            ),
            "export",
        )
