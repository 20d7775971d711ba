"""Connection hygiene of the SCP: what a peer may hold before and after it associates.

pynetdicom's ``ThreadedAssociationServer`` starts two threads for every accepted TCP
connection and counts every such connection against ``maximum_associations``, blocks
without a timeout in ``recv`` on a peer that sends half a PDU, reads whatever length a
PDU header announces in one go, and checks readiness with ``select()`` (which fails on
descriptors above 1 024). This module puts the trusted servers' rules in front of it:

* :class:`dicom_node.acceptgate.Gate` — one thread accepts every connection and holds it, without threads, until
  its A-ASSOCIATE-RQ PDU has arrived whole (TLS handshake included); only then is it given to
  pynetdicom (with the PDU bytes already read). A connection that has not sent its request
  within ``association_timeout_s`` is closed (dcmtk's ARTIM timer, PS3.8 §9.1.5); at most
  ``max_pending_per_host`` such connections per host and ``max_pending`` in all are held,
  the oldest being closed to make room for a new one (a well-behaved peer sends its
  request at once, so the one closed is the stuck one). Each close is counted in
  ``connections_dropped{reason}``.
* :func:`install` — per association (both reactors): readiness by ``poll``, a socket
  timeout so a peer that stops reading or sends half a PDU cannot hold a thread forever,
  a PDU reader that refuses (A-ABORT) a PDU whose header announces more than the node
  accepts before reading its body (:func:`pdu_limit`), DIMSE requests checked against
  their presentation context (:func:`check_request`, :mod:`dicom_node.dimseguard`), and a clean-up when the
  association's thread ends whatever the path (release, abort, timeout, error).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dicom_node.dimseguard import CommandGuard, check_request, guard_serve

__all__ = [
    "ASSOCIATE_MAX",
    "OTHER_PDU_MAX",
    "UNLIMITED_PDATA_MAX",
    "Limits",
    "check_request",
    "install",
    "pdu_limit",
]

log = logging.getLogger(__name__)

#: Largest A-ASSOCIATE-RQ/AC/RJ PDU accepted (128 presentation contexts with a dozen
#: transfer syntaxes each stay below 100 KiB).
ASSOCIATE_MAX = 256 * 1024
#: Largest A-RELEASE/A-ABORT PDU accepted (they are 4 bytes long).
OTHER_PDU_MAX = 64 * 1024
#: Largest P-DATA-TF PDU accepted when ``dicom.max_pdu`` is 0 (unlimited).
UNLIMITED_PDATA_MAX = 16 * 1024 * 1024



def pdu_limit(pdu_type: int, max_pdu: int) -> int:
    """The largest PDU length (the header's length field) accepted for one PDU type.

    Parameters
    ----------
    pdu_type : int
        The PDU type (1 to 7).
    max_pdu : int
        ``dicom.max_pdu``: the Maximum Length the node announces (0 = unlimited).

    Returns
    -------
    int
        ``max_pdu`` (or :data:`UNLIMITED_PDATA_MAX`) for P-DATA-TF, :data:`ASSOCIATE_MAX`
        for the association PDUs, :data:`OTHER_PDU_MAX` for the others.
    """
    if pdu_type == 0x04:
        return max_pdu if max_pdu > 0 else UNLIMITED_PDATA_MAX
    if pdu_type in (0x01, 0x02, 0x03):
        return ASSOCIATE_MAX
    return OTHER_PDU_MAX


@dataclass(frozen=True)
class Limits:
    """The connection limits (from ``[dicom]``)."""

    association_timeout_s: float
    max_pending_per_host: int
    max_pending: int
    max_pdu: int
    network_timeout_s: float
    #: Largest data set of one DIMSE message held in memory (0: no limit).
    max_dataset_bytes: int = 0


DropCounter = Callable[[str], None]


# ----------------------------------------------------------------- per association
class PduReader:
    """Reads PDUs from one association's socket: poll readiness, bounded lengths, deadlines.

    Parameters
    ----------
    sock : socket.socket
        The association's socket (plain or TLS).
    prefix : bytes
        Bytes already read from it (the A-ASSOCIATE-RQ PDU read by the :class:`Gate`).
    limits : Limits
        The limits.
    """

    def __init__(self, sock: socket.socket, prefix: bytes, limits: Limits) -> None:
        self.sock = sock
        self.limits = limits
        self._buf = memoryview(prefix) if prefix else None
        self._poll = select.poll()
        self._fd = sock.fileno()
        self._poll.register(self._fd, select.POLLIN)
        self.closed_reading = False

    @property
    def buffered(self) -> bool:
        """Whether bytes are waiting that readiness on the descriptor would not show."""
        if self._buf is not None:
            return True
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.fileno() >= 0 and self.sock.pending() > 0

    def ready(self) -> bool:
        """Whether a read would not block (data, end of stream or error)."""
        if self.buffered:
            return True
        if self.sock.fileno() < 0:
            raise OSError("the socket is closed")
        return bool(self._poll.poll(0))

    def read(self, n: int, deadline: float) -> bytearray:
        """Read ``n`` bytes (fewer at end of stream) before ``deadline`` (``TimeoutError`` after)."""
        out = bytearray(n)
        view = memoryview(out)
        got = 0
        if self._buf is not None:
            take = min(n, len(self._buf))
            view[:take] = self._buf[:take]
            got = take
            self._buf = self._buf[take:] if take < len(self._buf) else None
        if got == n:
            return out
        try:
            while got < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("PDU not received in time")
                self.sock.settimeout(left)
                k = self.sock.recv_into(view[got:], min(n - got, 1 << 20))
                if k == 0:
                    view.release()
                    return out[:got]
                got += k
        finally:
            with contextlib.suppress(OSError, ValueError):
                self.sock.settimeout(self.limits.network_timeout_s)
        return out

    def stop_reading(self) -> None:
        """Discard what the peer sends from now on (after an oversized PDU header)."""
        self.closed_reading = True
        self._buf = None
        with contextlib.suppress(OSError, ValueError):
            self.sock.shutdown(socket.SHUT_RD)


def _is_transport_event(self: Any) -> bool:
    """``DULServiceProvider._is_transport_event`` with :class:`PduReader` readiness."""
    sock = self.socket
    reader: PduReader = self._mrinode_reader
    if sock is None or sock.socket is None or not sock._is_connected:
        if self.state_machine.current_state == "Sta13" and sock is not None:
            sock.close()
            return True
        return False
    try:
        ready = reader.ready()
    except (OSError, ValueError):
        self.event_queue.put("Evt17")
        return False
    if ready:
        self._read_pdu_data()
        return True
    if self.state_machine.current_state == "Sta13":
        sock.close()
        return True
    return False


def _read_pdu_data(self: Any) -> None:
    """``DULServiceProvider._read_pdu_data`` that checks the announced length before reading."""
    reader: PduReader = self._mrinode_reader
    if reader.closed_reading:
        self.event_queue.put("Evt17")
        return
    deadline = time.monotonic() + reader.limits.network_timeout_s
    try:
        header = reader.read(6, deadline)
        if len(header) < 6:
            self.event_queue.put("Evt17")
            return
        pdu_type, _, length = struct.unpack(">BBL", header)
        if not 0x01 <= pdu_type <= 0x07:
            log.warning("unknown PDU type 0x%02X received: aborting the association", pdu_type)
            self.event_queue.put("Evt19")
            return
        limit = pdu_limit(pdu_type, reader.limits.max_pdu)
        if length > limit:
            log.warning("a PDU of type 0x%02X announces %d bytes (limit %d): aborting the association",
                        pdu_type, length, limit)
            self._mrinode_on_drop("pdu_too_large")
            reader.stop_reading()
            self.event_queue.put("Evt19")
            return
        body = reader.read(length, deadline)
    except (OSError, ValueError) as exc:  # TimeoutError is an OSError
        log.info("connection lost while reading a PDU (%s)", type(exc).__name__)
        self.event_queue.put("Evt17")
        return
    if len(body) != length:
        log.info("connection closed inside a PDU (%d of %d bytes)", len(body), length)
        self.event_queue.put("Evt17")
        return
    try:
        pdu, event = self._decode_pdu(header + body)
    except Exception as exc:
        log.warning("undecodable PDU of type 0x%02X (%s): aborting the association", pdu_type, type(exc).__name__)
        self.event_queue.put("Evt19")
        return
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)


# ------------------------------------------------------------------- install
def _unbind_standard_handlers(assoc: Any) -> None:
    """Unbind pynetdicom's logging handlers when the ``pynetdicom`` logger would drop their lines.

    They format every PDU and DIMSE message for INFO/DEBUG lines, and the DIMSE one raises
    (a traceback in the log) on a command set without the elements it expects.
    """
    if logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        return
    from pynetdicom import _handlers, evt

    for event, handler in (
        (evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler),
        (evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler),
        (evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler),
        (evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler),
    ):
        with contextlib.suppress(ValueError, KeyError):
            assoc.unbind(event, handler)


def _wrap_target(thread: Any, name: str, on_end: Callable[[BaseException | None], None]) -> None:
    target = thread._target

    def run() -> None:
        error: BaseException | None = None
        try:
            target()
        except Exception as exc:  # no traceback on stderr: one line, and the association is closed
            error = exc
            log.error("%s thread of an association failed (%s: %s)", name, type(exc).__name__, exc)
        finally:
            on_end(error)

    thread._target = run


def _close_association_socket(assoc: Any) -> None:
    sock = getattr(assoc.dul, "socket", None)
    raw = getattr(sock, "socket", None)
    if sock is not None and raw is not None:
        with contextlib.suppress(OSError, ValueError):
            raw.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            raw.close()
        with contextlib.suppress(AttributeError):
            sock.socket = None


#: What :func:`install` replaces or calls on pynetdicom (3.0.x), as ``fastpath.missing_attributes`` takes it.
NEEDED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pynetdicom.dul:DULServiceProvider", ("_is_transport_event", "_read_pdu_data", "_decode_pdu")),
    ("pynetdicom.association:Association", ("_serve_request", "unbind", "kill")),
    ("pynetdicom.dimse:DIMSEServiceProvider", ("receive_primitive",)),
    ("pynetdicom.transport:ThreadedAssociationServer", ("process_request", "finish_request")),
    ("pynetdicom._handlers", ("standard_dimse_recv_handler", "standard_dimse_sent_handler",
                              "standard_pdu_recv_handler", "standard_pdu_sent_handler")),
    ("pynetdicom.events", ("EVT_DIMSE_RECV", "EVT_DIMSE_SENT", "EVT_PDU_RECV", "EVT_PDU_SENT")),
)


def unsupported() -> str | None:
    """Why the guards cannot run on the installed pynetdicom, or ``None`` when they can.

    Unlike the fast reactors, the guards have no fallback (without them a bad peer could
    take the node off the air), so :class:`dicom_node.scp.StoreSCP` refuses to start.
    """
    import pynetdicom

    from dicom_node.fastpath import WRITTEN_FOR, missing_attributes

    version = str(getattr(pynetdicom, "__version__", "?"))
    if tuple(version.split(".")[:2]) != tuple(str(x) for x in WRITTEN_FOR):
        return f"pynetdicom {version} is installed; the receive guards were written for {WRITTEN_FOR[0]}.{WRITTEN_FOR[1]}.x"
    missing = missing_attributes(NEEDED)
    return f"pynetdicom {version} lacks {', '.join(missing)}" if missing else None


def install(assoc: Any, prefix: bytes, limits: Limits, on_drop: DropCounter,
            on_failure: Callable[[int], None], on_end: Callable[[Any], None]) -> PduReader | None:
    """Guard one not-yet-started acceptor association (either reactor).

    Call last in the ``EVT_CONN_OPEN`` handler (after :func:`dicom_node.fastpath.install`).

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        The association.
    prefix : bytes
        Bytes already read from its socket by the :class:`Gate` (its A-ASSOCIATE-RQ).
    limits : Limits
        The limits.
    on_drop : callable
        Called with a reason when the association is closed for a limit.
    on_failure : callable
        Called with the status of each C-STORE refused here.
    on_end : callable
        Called with the association once its thread has ended, whatever the path.

    Returns
    -------
    PduReader or None
        The association's reader (``None`` when it has no socket).
    """
    dul = assoc.dul
    raw = getattr(dul.socket, "socket", None)
    if raw is None:
        return None
    raw.settimeout(limits.network_timeout_s)  # no send or receive blocks forever
    reader = PduReader(raw, prefix, limits)
    dul._mrinode_reader = reader
    dul._mrinode_on_drop = on_drop
    dul._is_transport_event = types.MethodType(_is_transport_event, dul)
    dul._read_pdu_data = types.MethodType(_read_pdu_data, dul)
    # The ARTIM timer also bounds Sta13 (waiting for the peer to close after a reject,
    # release or abort); and the association thread's wait for the request.
    assoc.acse_timeout = limits.association_timeout_s
    guard_serve(assoc, on_failure)
    assoc.dimse.receive_primitive = CommandGuard(assoc, assoc.dimse.receive_primitive, on_failure,
                                                  limits.max_dataset_bytes, on_drop)
    _unbind_standard_handlers(assoc)

    def dul_ended(error: BaseException | None) -> None:
        if error is not None:
            assoc._kill = True
            _close_association_socket(assoc)

    def assoc_ended(error: BaseException | None) -> None:
        try:
            dul._kill_thread = True
            _close_association_socket(assoc)
            for name in ("_mrinode_wake_r", "_mrinode_wake_w"):
                s = getattr(dul, name, None)
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()
        finally:
            on_end(assoc)

    _wrap_target(dul, "DUL", dul_ended)
    _wrap_target(assoc, "association", assoc_ended)
    return reader
