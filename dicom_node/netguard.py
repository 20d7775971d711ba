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
  their presentation context (:func:`check_request`), and a clean-up when the
  association's thread ends whatever the path (release, abort, timeout, error).
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import ssl
import struct
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

_VERIFICATION = "1.2.840.10008.1.1"


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


# ------------------------------------------------------------------- DIMSE checks
def check_request(kind: str, abstract_syntax: str, sop_class: str | None, sop_instance: str | None,
                  message_id: int | None) -> tuple[int, str] | None:
    """Whether a DIMSE-C request may be served on its presentation context.

    Parameters
    ----------
    kind : str
        The primitive's class name (``"C_STORE"``, ``"C_ECHO"``, ...).
    abstract_syntax : str
        The abstract syntax of the context the request came on.
    sop_class, sop_instance : str or None
        Its Affected SOP Class and Instance UIDs.
    message_id : int or None
        Its Message ID.

    Returns
    -------
    tuple or None
        ``None`` when it may be served, else ``(status, error comment)`` to answer with.

    Notes
    -----
    PS3.8 §7.1.1.13 and PS3.7 §6.3.1: a DIMSE message is exchanged on a presentation
    context whose abstract syntax is the SOP Class it operates on, so a C-STORE on the
    Verification context (or a C-ECHO on a storage context) does not belong to that
    context's service. Such a request is refused with ``0x0122`` (Refused: SOP Class not
    supported, PS3.7 Annex C.5.4 and PS3.4 Table B.2-1) and the association lives on; a
    C-STORE request without its Affected SOP Instance UID (a required field of the
    C-STORE-RQ, PS3.7 Table 9.3-1) is answered ``0xC000`` (Cannot understand).
    """
    if kind == "C_STORE":
        if abstract_syntax == _VERIFICATION or not sop_class or sop_class != abstract_syntax:
            return 0x0122, "SOP Class not supported on this presentation context"
        if not sop_instance:
            return 0xC000, "Cannot understand: no Affected SOP Instance UID"
        if message_id is None:
            return 0xC000, "Cannot understand: no Message ID"
        return None
    if kind == "C_ECHO":
        if abstract_syntax != _VERIFICATION or (sop_class and sop_class != _VERIFICATION):
            return 0x0122, "SOP Class not supported on this presentation context"
        return None
    return None


def _send_response(assoc: Any, context_id: int, command_field: int, message_id: int, status: int,
                   sop_class: str | None, sop_instance: str | None, comment: str) -> bool:
    """Send a response command directly; ``False`` when it does not fit the peer's maximum PDU."""
    from pynetdicom.pdu_primitives import P_DATA

    from dicom_node.fastpath import encode_response_command

    command = encode_response_command(command_field, message_id, status, sop_class, sop_instance, comment)
    max_pdu = assoc.dimse.maximum_pdu_size
    if max_pdu and len(command) + 6 > max_pdu:
        return False
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
    assoc.dul.send_pdu(pdata)
    return True


def _answer(assoc: Any, msg: Any, context_id: int, status: int, comment: str) -> None:
    from pynetdicom.dimse_primitives import C_ECHO, C_STORE

    kind = type(msg).__name__
    message_id = msg.MessageID if msg.MessageID is not None else 0
    sop_class = str(msg.AffectedSOPClassUID) if msg.AffectedSOPClassUID else None
    sop_instance = str(msg.AffectedSOPInstanceUID) if kind == "C_STORE" and msg.AffectedSOPInstanceUID else None
    if _send_response(assoc, context_id, 0x8001 if kind == "C_STORE" else 0x8030, message_id, status, sop_class,
                      sop_instance, comment):
        return
    rsp: Any = C_STORE() if kind == "C_STORE" else C_ECHO()
    rsp.MessageIDBeingRespondedTo = message_id
    if sop_class:
        rsp.AffectedSOPClassUID = sop_class
    if sop_instance:
        rsp.AffectedSOPInstanceUID = sop_instance
    rsp.Status = status
    rsp.ErrorComment = comment[:64]
    assoc.dimse.send_msg(rsp, context_id)


#: Command Field values pynetdicom can decode (DIMSE-C and DIMSE-N requests and responses, C-CANCEL).
_COMMAND_FIELDS = frozenset({0x0001, 0x0010, 0x0020, 0x0021, 0x0030, 0x0FFF, 0x0100, 0x0110, 0x0120, 0x0130, 0x0140,
                             0x0150}) | frozenset(c | 0x8000 for c in (0x0001, 0x0010, 0x0020, 0x0021, 0x0030, 0x0100,
                                                                        0x0110, 0x0120, 0x0130, 0x0140, 0x0150))
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def _uid_value(raw: bytes | None) -> str | None:
    """A UID element's value if it is a valid UID (PS3.5 §9.1), else ``None``."""
    if not raw:
        return None
    text = raw.rstrip(b"\x00 ").decode("ascii", "replace")
    return text if len(text) <= 64 and _UID_RE.fullmatch(text) else None


def _us(raw: bytes | None) -> int | None:
    return struct.unpack("<H", raw)[0] if raw is not None and len(raw) == 2 else None


class _CommandGuard:
    """The association's ``receive_primitive``, in front of pynetdicom's (and fastdimse's).

    A command set that arrives whole at a message boundary is read first: one that cannot be
    read, or has a Command Field pynetdicom does not know, aborts the association (one log
    line; pynetdicom would log a traceback and abort). A C-STORE-RQ without a data set or
    whose Message ID, Affected SOP Class UID or Affected SOP Instance UID is missing or not a
    valid UID is answered ``0xC000`` at once and its data set discarded (pynetdicom would log
    a traceback, or wait for nothing). A data fragment outside any message aborts, and so
    does a data set that grows past ``max_dataset_bytes`` (both readers hold a message's
    data set in memory until its last fragment).
    """

    def __init__(self, assoc: Any, inner: Callable[[Any], None], on_failure: Callable[[int], None],
                 max_dataset_bytes: int = 0, on_drop: DropCounter | None = None) -> None:
        self.assoc = assoc
        self.inner = inner
        self.on_failure = on_failure
        self.max_dataset_bytes = max_dataset_bytes
        self.on_drop = on_drop
        self.discarding: int | None = None  # context ID whose data set is being dropped
        self.dataset_bytes = 0  # data set bytes of the message being received

    def _abort(self, why: str) -> None:
        log.warning("aborting the association: %s", why)
        self.assoc.dimse.message = None
        self.discarding = None
        self.assoc.dul.event_queue.put("Evt19")

    def _at_boundary(self) -> bool:
        return self.assoc.dimse.message is None and getattr(self.inner, "pending", None) is None

    def __call__(self, primitive: Any) -> None:
        pdvs: list[tuple[int, bytes]] = primitive.presentation_data_value_list
        while pdvs and self.discarding is not None:
            context_id, data = pdvs[0]
            if not data or data[0] & 1 or context_id != self.discarding:
                self._abort("a refused C-STORE's data set was interrupted")
                return
            if data[0] & 2:
                self.discarding = None
            pdvs = pdvs[1:]
        if not pdvs:
            return
        if self._at_boundary():
            context_id, data = pdvs[0]
            if not data or not data[0] & 1:
                self._abort("a data fragment outside any DIMSE message")
                return
            if data[0] & 2 and self._refused(context_id, bytes(data[1:])):
                if len(pdvs) > 1:
                    self(_rest(pdvs[1:]))
                return
        if self.max_dataset_bytes:
            for _, data in pdvs:
                if data and not data[0] & 1:
                    self.dataset_bytes += len(data) - 1
                    if self.dataset_bytes > self.max_dataset_bytes:
                        if self.on_drop is not None:
                            self.on_drop("dataset_too_large")
                        self._abort(f"a data set over {self.max_dataset_bytes} bytes")
                        self.dataset_bytes = 0
                        if getattr(self.inner, "pending", None) is not None:
                            self.inner.pending = None  # type: ignore[attr-defined]
                        return
                    if data[0] & 2:
                        self.dataset_bytes = 0
        if len(pdvs) != len(primitive.presentation_data_value_list):
            primitive = _rest(pdvs)
        try:
            self.inner(primitive)
        except Exception as exc:  # pynetdicom's decoder on a command set it cannot read
            self._abort(f"undecodable DIMSE message ({type(exc).__name__})")

    def _refused(self, context_id: int, raw: bytes) -> bool:
        """Check one whole command set; ``True`` when it was answered or aborted here."""
        from dicom_node.fastdimse import command_elements

        fields = command_elements(raw)
        command = _us(fields.get(0x0100)) if fields is not None else None
        if fields is None or command not in _COMMAND_FIELDS:
            self._abort("a command set that cannot be read" if fields is None else "an unknown DIMSE command")
            return True
        if command == 0x0030 and fields.get(0x0002) and _uid_value(fields.get(0x0002)) is None:
            self._abort("a C-ECHO-RQ whose Affected SOP Class UID is not a UID")
            return True
        if command != 0x0001:
            return False
        message_id = _us(fields.get(0x0110))
        dataset_type = _us(fields.get(0x0800))
        if message_id is None or dataset_type is None:
            self._abort("a C-STORE-RQ without Message ID or Command Data Set Type")
            return True
        sop_class = _uid_value(fields.get(0x0002))
        sop_instance = _uid_value(fields.get(0x1000))
        if dataset_type == 0x0101:
            comment = "Cannot understand: C-STORE without a data set"
        elif sop_class is None:
            comment = "Cannot understand: no valid Affected SOP Class UID"
        elif sop_instance is None:
            comment = "Cannot understand: no valid Affected SOP Instance UID"
        else:
            return False
        log.warning("C-STORE request refused with 0xC000: %s", comment)
        self.on_failure(0xC000)
        if dataset_type != 0x0101:
            self.discarding = context_id
        if not _send_response(self.assoc, context_id, 0x8001, message_id, 0xC000, sop_class, sop_instance, comment):
            self._abort("the peer's maximum PDU is too small for a response")
        return True


def _rest(pdvs: list[tuple[int, bytes]]) -> Any:
    from pynetdicom.pdu_primitives import P_DATA

    rest = P_DATA()
    rest.presentation_data_value_list = [[cx, bytes(data)] for cx, data in pdvs]  # type: ignore[misc]
    return rest


def _guard_serve(assoc: Any, on_failure: Callable[[int], None]) -> None:
    serve = assoc._serve_request

    def serve_checked(msg: Any, context_id: int) -> None:
        kind = type(msg).__name__
        cx = assoc._accepted_cx.get(context_id)
        if cx is not None and kind in ("C_STORE", "C_ECHO") and not assoc._sent_release:
            sop_class = getattr(msg, "AffectedSOPClassUID", None)
            sop_instance = getattr(msg, "AffectedSOPInstanceUID", None) if kind == "C_STORE" else None
            refusal = check_request(kind, str(cx.abstract_syntax), str(sop_class) if sop_class else None,
                                    str(sop_instance) if sop_instance else None, msg.MessageID)
            if refusal is not None:
                status, comment = refusal
                log.warning("%s request refused with 0x%04X: %s", kind.replace("_", "-"), status, comment)
                if kind == "C_STORE":
                    on_failure(status)
                _answer(assoc, msg, context_id, status, comment)
                return
        serve(msg, context_id)

    assoc._serve_request = serve_checked


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
    _guard_serve(assoc, on_failure)
    assoc.dimse.receive_primitive = _CommandGuard(assoc, assoc.dimse.receive_primitive, on_failure,
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
