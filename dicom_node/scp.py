"""The DICOM SCP: C-ECHO and C-STORE into the spool and the store database.

Every C-STORE is checked on the wire (:func:`dicom_node.wire.scan_dataset`), written
as received (original transfer syntax, no pixel decoding) to the spool atomically, and
indexed in the store database before the success status is answered. Failures answer
a failure status with an error comment and leave the association usable:

* ``0xA700`` — out of resources (the file or the index could not be written);
* ``0xA900`` — the dataset does not match the SOP class or instance of the request;
* ``0xC000`` — cannot understand (empty, truncated or mis-encoded dataset, missing UIDs);
* ``0xC211`` — an unexpected error in the handler (logged with its traceback).

With ``dicom.fast_reactor`` (the default) each association runs the event-driven loops of
:mod:`dicom_node.fastpath` and its C-STORE requests are read and answered directly by
:mod:`dicom_node.fastdimse` (:meth:`StoreSCP._on_store_stream`); anything else, and every
request with ``fast_reactor = false``, goes through pynetdicom's ``EVT_C_STORE``
(:meth:`StoreSCP._on_store`). Both end in the same :meth:`StoreSCP._store_stream`.

Associations are admitted by calling AE title and host (``[[dicom.allowed_callers]]``)
and, optionally, by called AE title; refusals are logged with the reason and counted.

Connections reach pynetdicom through :class:`dicom_node.acceptgate.Gate` (an ARTIM timeout
for the A-ASSOCIATE-RQ, per-host and global caps on connections not yet associated), and
every association is guarded by :func:`dicom_node.netguard.install` (PDU lengths checked
before their bytes are read, no blocking without a timeout, DIMSE requests checked against
their presentation context, everything released when its thread ends). Association slots
(``dicom.max_associations``) are taken only by peers whose request was admitted, and given
back when their association thread ends.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dicom_node.logs import uid_tag
from dicom_node.store import InstanceRecord
from dicom_node.wire import DatasetError, encode_file_meta, scan_dataset

if TYPE_CHECKING:
    from pynetdicom.events import Event
    from pynetdicom.transport import ThreadedAssociationServer

    from dicom_node.audit import AuditLog
    from dicom_node.config import NodeConfig
    from dicom_node.metrics import NodeMetrics
    from dicom_node.spool import Spool
    from dicom_node.store import Store

__all__ = ["TRANSFER_SYNTAXES", "StoreSCP", "set_nodelay"]

log = logging.getLogger(__name__)

#: Transfer syntaxes accepted for storage: the uncompressed, deflated and image-compression
#: ones an MR study can carry (no video, no JPIP). Kept short on purpose: pynetdicom
#: deep-copies every supported context for each association.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old scanners)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
    "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112",  # JPEG XL
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression
)
# A-ASSOCIATE-RJ (result permanent, source service-user, diagnostic).
_RJ_CALLING = (0x01, 0x01, 0x03)
_RJ_CALLED = (0x01, 0x01, 0x07)
_RJ_BUSY = (0x02, 0x03, 0x02)  # transient, service-provider (presentation), local limit exceeded


def set_nodelay(event: Event) -> None:
    """``EVT_CONN_OPEN`` handler: switch Nagle's algorithm off on the association socket."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _status(code: int, comment: str) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


class StoreSCP:
    """The node's association acceptor.

    Parameters
    ----------
    cfg : NodeConfig
        The node configuration.
    store : Store
        The store database.
    spool : Spool
        The spool.
    metrics : NodeMetrics
        Counters to update.
    audit : AuditLog
        Receives ``study_received`` events.
    on_instance : callable, optional
        Called with the Study Instance UID after each stored instance.
    """

    def __init__(
        self,
        cfg: NodeConfig,
        store: Store,
        spool: Spool,
        metrics: NodeMetrics,
        audit: AuditLog,
        on_instance: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.spool = spool
        self.metrics = metrics
        self.audit = audit
        self.on_instance = on_instance
        self._server: ThreadedAssociationServer | None = None
        self._ae: Any = None
        self._cond = threading.Condition()
        self._inflight = 0
        self._stopping = False
        self._gate: Any = None
        self._limits: Any = None
        self._slots_lock = threading.Lock()
        self._associated = 0

    # --------------------------------------------------------------- set-up
    def _ssl_context(self) -> ssl.SSLContext | None:
        tls = self.cfg.dicom.tls
        if not tls.enabled:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        assert tls.cert is not None and tls.key is not None
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        if tls.ca is not None:
            ctx.load_verify_locations(str(tls.ca))
        if tls.verify_client:
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def start(self) -> None:
        """Bind the port and start serving in background threads.

        Raises
        ------
        OSError
            If the port cannot be bound (the message names host and port).
        """
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
        from pynetdicom.transport import ThreadedAssociationServer

        from dicom_node.acceptgate import Gate
        from dicom_node.netguard import Limits, unsupported

        why = unsupported()
        if why is not None:
            raise OSError(errno.ENOTSUP, f"cannot serve DICOM safely: {why} (install pynetdicom>=3.0,<3.1)")

        d = self.cfg.dicom
        ae = AE(ae_title=self.cfg.node.ae_title)
        ae.maximum_pdu_size = d.max_pdu
        ae.network_timeout = d.network_timeout_s
        ae.acse_timeout = d.association_timeout_s
        ae.dimse_timeout = d.network_timeout_s
        # Slots are counted in _on_requested for admitted peers only (pynetdicom counts
        # every connection's thread, associated or not).
        ae.maximum_associations = 1_000_000
        ae.require_called_aet = False  # checked in _on_requested, with logging
        ae.require_calling_aet = []
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(str(cx.abstract_syntax), list(TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification, ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        try:
            server = ae.make_server((d.host, d.port), evt_handlers=handlers, ssl_context=self._ssl_context(),
                                    server_class=ThreadedAssociationServer)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen for DICOM on {d.host}:{d.port} ({exc.strerror or exc})") from exc
        if d.fast_reactor:
            from dicom_node.fastpath import CheapCopyContexts

            server.contexts = CheapCopyContexts(server.contexts)
        # One message's data set is held in memory until its last fragment: bounded by the
        # largest data set the node accepts at all (the inflated-size limit).
        limits = Limits(d.association_timeout_s, d.max_pending_per_host, d.max_pending, d.max_pdu, d.network_timeout_s,
                        max_dataset_bytes=d.max_inflated_mb * 1024 * 1024)
        self._limits = limits
        self._gate = Gate(server, limits, self._dropped)
        ae._servers.append(server)
        self._ae, self._server = ae, server
        self._gate.start()
        log.info("DICOM SCP %s listening on %s:%d%s", self.cfg.node.ae_title, d.host, self.port,
                 " (TLS)" if d.tls.enabled else "")

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._server is None:
            return self.cfg.dicom.port
        return int(self._server.server_address[1])

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop accepting, let C-STOREs in flight finish (up to ``grace_s``), then close."""
        if self._server is None:
            return
        server, ae = self._server, self._ae
        with self._cond:
            self._stopping = True
        # Stop the accept loop, close the listening socket and the connections not yet
        # associated; live associations continue.
        self._gate.stop_accepting()
        deadline = time.monotonic() + grace_s
        with self._cond:
            while self._inflight and time.monotonic() < deadline:
                self._cond.wait(timeout=0.1)
        for assoc in list(server.active_associations):
            if assoc.is_established:
                assoc.abort()
        ae.shutdown()
        self._server = None
        log.info("DICOM SCP stopped")

    # ------------------------------------------------------------- handlers
    @property
    def associated(self) -> int:
        """Association slots taken now (admitted peers whose association thread has not ended)."""
        with self._slots_lock:
            return self._associated

    @property
    def pending(self) -> int:
        """Connections held by the accept gate, not yet associated."""
        gate = self._gate
        return 0 if gate is None else int(gate.pending)

    def _dropped(self, reason: str) -> None:
        self.metrics.connections_dropped.labels(reason=reason).inc()

    def _store_refused(self, status: int) -> None:
        self.metrics.store_failures.labels(status=f"0x{status:04X}").inc()

    def _release_slot(self, assoc: Any) -> None:
        if getattr(assoc, "_mrinode_slot", False):
            assoc._mrinode_slot = False
            with self._slots_lock:
                self._associated -= 1

    def _on_conn_open(self, event: Event) -> None:
        from dicom_node import netguard

        set_nodelay(event)
        assoc = event.assoc
        if self.cfg.dicom.fast_reactor:
            from dicom_node import fastdimse, fastpath

            if fastpath.install(assoc):  # all patches or none (plain pynetdicom on another release)
                fastdimse.install(assoc, self._on_store_stream)
        raw = getattr(assoc.dul.socket, "socket", None)
        prefix = self._gate.take_prefix(raw) if self._gate is not None else b""
        netguard.install(assoc, prefix, self._limits, self._dropped, self._store_refused, self._release_slot)

    def _refuse(self, event: Event, reason: str, rsd: tuple[int, int, int], why: str) -> None:
        rq = event.assoc.requestor
        prim: Any = rq.primitive
        log.warning("association refused (%s): calling AE %r from %s, called AE %r", why,
                    (prim.calling_ae_title or "").strip(), rq.address, (prim.called_ae_title or "").strip())
        self.metrics.associations_refused.labels(reason=reason).inc()
        event.assoc.acse.send_reject(*rsd)
        event.assoc.kill()

    def _on_requested(self, event: Event) -> None:
        d = self.cfg.dicom
        rq = event.assoc.requestor
        prim: Any = rq.primitive
        calling = (prim.calling_ae_title or "").strip()
        called = (prim.called_ae_title or "").strip()
        host = rq.address
        if self._stopping:
            self._refuse(event, "shutting_down", _RJ_BUSY, "the node is shutting down")
            return
        if d.check_called_ae and called != self.cfg.node.ae_title:
            self._refuse(event, "called_ae", _RJ_CALLED, f"called AE title is not {self.cfg.node.ae_title!r}")
            return
        if d.allow_any_caller or any(c.ae_title == calling and (c.host is None or c.host == host)
                                     for c in d.allowed_callers):
            with self._slots_lock:
                busy = self._associated >= d.max_associations
                if not busy:
                    self._associated += 1
                    setattr(event.assoc, "_mrinode_slot", True)  # noqa: B010 - read back by _release_slot
            if busy:
                self._refuse(event, "busy", _RJ_BUSY, f"all {d.max_associations} association slots are in use")
                return
            self.metrics.associations_accepted.inc()
            return
        known = any(c.ae_title == calling for c in d.allowed_callers)
        if known:
            self._refuse(event, "host", _RJ_CALLING, f"calling AE {calling!r} is not allowed from host {host}")
        else:
            self._refuse(event, "calling_ae", _RJ_CALLING, f"calling AE {calling!r} is not in dicom.allowed_callers")

    def _on_echo(self, event: Event) -> int:
        return 0x0000

    def _on_store(self, event: Event) -> Any:
        """``EVT_C_STORE`` handler (requests that pynetdicom decoded itself)."""
        req: Any = event.request
        stream: bytes = req.DataSet.getvalue() if req.DataSet is not None else b""
        calling = (event.assoc.requestor.ae_title or "").strip()
        with self._counted():
            code, comment = self._store_stream(stream, str(event.context.transfer_syntax),
                                               str(req.AffectedSOPClassUID or ""), str(req.AffectedSOPInstanceUID or ""),
                                               calling)
        return code if comment is None else _status(code, comment)

    def _on_store_stream(self, assoc: Any, context_id: int, sop_class: str, sop_instance: str, transfer_syntax: str,
                         stream: bytes) -> tuple[int, str | None]:
        """The handler of :class:`dicom_node.fastdimse.StoreReceiver` (requests read directly)."""
        calling = (assoc.requestor.ae_title or "").strip()
        with self._counted():
            try:
                return self._store_stream(stream, transfer_syntax, sop_class, sop_instance, calling)
            except Exception as exc:  # as pynetdicom does for EVT_C_STORE: a failure status, the association lives on
                log.exception("C-STORE handler failed for instance %s", uid_tag(sop_instance))
                self.metrics.store_failures.labels(status="0xC211").inc()
                return 0xC211, f"Processing failure: {type(exc).__name__}"

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        with self._cond:
            self._inflight += 1
        try:
            yield
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    def _fail(self, code: int, comment: str, detail: str) -> tuple[int, str]:
        self.metrics.store_failures.labels(status=f"0x{code:04X}").inc()
        log.warning("C-STORE failed with 0x%04X: %s", code, detail)
        return code, comment[:64]

    def _store_stream(self, stream: bytes, ts: str, rq_class: str, rq_sop: str,
                      calling: str) -> tuple[int, str | None]:
        """Check, spool and index one received data set; return ``(status, error comment or None)``.

        Refused before anything is written: free space below ``dicom.min_free_mb``
        (``0xA700``), a malformed or over-inflating dataset (``DatasetError.status``), UIDs
        missing or differing from the request, an image whose pixel attributes cannot be
        right (:func:`dicom_node.imagecheck.check_image`). A failure after the spool write
        removes the file, so the next start does not index it as accepted.
        """
        from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

        from dicom_node.imagecheck import check_image

        d = self.cfg.dicom
        who = f"instance {uid_tag(rq_sop)}"
        if self.spool.space.low():
            return self._fail(0xA700, "Out of resources: the node's disk is full",
                              f"{who}: free space on the spool is below dicom.min_free_mb")
        try:
            info = scan_dataset(stream, ts, max_inflated=d.max_inflated_mb << 20)
            if info.sop_uid and info.study_uid and info.sop_uid == rq_sop:
                check_image(info, ts, info.sop_class or rq_class)
        except DatasetError as exc:
            prefix = {0xA700: "Out of resources: ", 0xA900: "Data set does not match SOP class: "}
            return self._fail(exc.status, prefix.get(exc.status, "Cannot understand: ") + str(exc), f"{who}: {exc}")
        if not info.sop_uid:
            return self._fail(0xC000, "Dataset has no SOP Instance UID", f"{who}: the dataset has no SOP Instance UID")
        if not info.study_uid:
            return self._fail(0xC000, "Dataset has no Study Instance UID",
                              f"{who}: the dataset has no Study Instance UID")
        if info.sop_uid != rq_sop:
            return self._fail(0xA900, "SOP Instance UID differs from the request",
                              f"{who}: dataset SOP Instance UID {uid_tag(info.sop_uid)} differs")
        if info.sop_class and info.sop_class != rq_class:
            return self._fail(0xA900, "SOP Class UID differs from the presentation context",
                              f"{who}: dataset SOP Class {uid_tag(info.sop_class)} is not {uid_tag(rq_class)}")
        head = encode_file_meta(rq_class, rq_sop, ts, PYNETDICOM_IMPLEMENTATION_UID,
                                PYNETDICOM_IMPLEMENTATION_VERSION, calling)
        try:
            path, size = self.spool.write(info.study_uid, info.sop_uid, (head, stream))
        except OSError as exc:
            self.spool.space.refresh(force=True)  # a full disk says so at once in /health and /metrics
            return self._fail(0xA700, "Out of resources: cannot write the instance",
                              f"{who}: spool write failed ({exc.strerror or exc})")
        rec = InstanceRecord(
            sop_uid=info.sop_uid, study_uid=info.study_uid, series_uid=info.series_uid, sop_class=info.sop_class or rq_class,
            modality=info.modality, series_desc=info.series_desc, transfer_syntax=ts, path=str(path), size=size,
            calling_ae=calling,
        )
        try:
            new_study, old_path = self.store.add_instance(rec)
        except sqlite3.Error as exc:
            # Leave no file behind, or the next start would index it as accepted; unless the
            # index has a row for this path: then the write replaced an earlier accepted copy.
            try:
                keep = bool(self.store.indexed_paths([str(path)]))
            except sqlite3.Error:
                keep = False
            if not keep:
                with contextlib.suppress(OSError):
                    self.spool.remove(path)
            return self._fail(0xA700, "Out of resources: cannot index the instance",
                              f"{who}: store database write failed ({exc})")
        if old_path:
            with contextlib.suppress(OSError):
                os.unlink(old_path)
        self.metrics.instances_received.inc()
        self.metrics.bytes_received.inc(size)
        if new_study:
            log.info("study %s: first instance from %s; it is processed when the sender says it is complete "
                     "(POST /studies/{uid}/complete) or after %g s without a new instance (tracker.stable_after_s)",
                     uid_tag(info.study_uid), calling, self.cfg.tracker.stable_after_s)
            try:
                self.audit.record("study_received", study=uid_tag(info.study_uid), calling_ae=calling)
            except OSError as exc:  # the instance is stored and indexed: it stays accepted
                log.warning("audit log write failed (%s)", exc.strerror or exc)
        if self.on_instance is not None:
            self.on_instance(info.study_uid)
        return 0x0000, None
