"""DIMSE request checks of the SCP's associations: what a command set may ask on its context.

Installed per association by :func:`dicom_node.netguard.install`: :class:`CommandGuard` reads
each whole command set before pynetdicom does (unreadable or unknown commands abort; a C-STORE
without a valid UID or data set is answered ``0xC000`` at once) and :func:`guard_serve` checks
each decoded request against its presentation context (:func:`check_request`).
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicom_node.netguard import DropCounter

__all__ = ["CommandGuard", "check_request", "guard_serve"]

log = logging.getLogger("dicom_node.netguard")  # (one logger name for the receive guards, as before the split)

_VERIFICATION = "1.2.840.10008.1.1"


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


class CommandGuard:
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


def guard_serve(assoc: Any, on_failure: Callable[[int], None]) -> None:
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
