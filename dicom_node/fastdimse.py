"""Direct reception of C-STORE requests on one association (CPU, not semantics).

pynetdicom turns every received DIMSE message into a pydicom dataset (the command set),
then into a validated request primitive, then runs its Storage service class, which
triggers ``EVT_C_STORE`` and encodes the response through another pydicom dataset. On
one association that is most of the Python work per instance. :func:`install` (called
after :func:`dicom_node.fastpath.install`, from the ``EVT_CONN_OPEN`` handler) puts a
:class:`StoreReceiver` in front of the association's DIMSE provider. For each P-DATA it:

* reads a C-STORE-RQ command set that arrives whole in one fragment directly
  (implicit VR little endian, the nine elements Part 7 allows and nothing else);
* collects the data-set fragments that follow and, on the last one, calls the store
  handler with the request's UIDs, the context's transfer syntax and the bytes;
* answers with the direct encoder of :mod:`dicom_node.fastpath` (status and error
  comment), through pynetdicom's own ``send_msg`` only when the peer's maximum PDU is
  smaller than the response.

Everything else goes to pynetdicom unchanged, from the first fragment on: other DIMSE
messages, command sets split over fragments or with elements outside the nine, a request
whose SOP class is not its context's storage abstract syntax, rejected contexts, requests
during release, SOP Class Common Extended Negotiation, and pynetdicom's chunked-receive or
unrestricted-storage modes. A data fragment on another context or a command fragment in
the middle of a data set is a protocol error: the association is aborted, as pynetdicom
does for an undecodable message.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dicom_node.fastpath import encode_response_command

__all__ = ["StoreHandler", "StoreReceiver", "StoreRequest", "command_elements", "install", "parse_store_command"]

log = logging.getLogger(__name__)

_VERIFICATION = "1.2.840.10008.1.1"
_C_STORE_RQ = 0x0001
_NO_DATASET = 0x0101
_UID_ELEMENTS = {0x0002: "sop_class", 0x1000: "sop_instance"}
_US_ELEMENTS = {0x0100: "command", 0x0110: "message_id", 0x0700: "priority", 0x0800: "dataset_type",
                0x1031: "move_id"}
_OTHER_ELEMENTS = frozenset({0x0000, 0x1030})  # group length (checked), move originator AE (unused)


@dataclass(frozen=True)
class StoreRequest:
    """The fields of a C-STORE-RQ command set the node needs."""

    message_id: int
    sop_class: str
    sop_instance: str


#: ``handler(assoc, context_id, sop_class, sop_instance, transfer_syntax, stream) -> (status, comment)``.
StoreHandler = Callable[[Any, int, str, str, str, bytes], tuple[int, str | None]]


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii")


def parse_store_command(raw: bytes) -> StoreRequest | None:
    """Read a C-STORE-RQ command set (implicit VR little endian).

    Parameters
    ----------
    raw : bytes
        The encoded command set.

    Returns
    -------
    StoreRequest or None
        ``None`` unless it is a well-formed C-STORE-RQ with a data set, made only of the
        elements Part 7 lists for it, with every element inside the buffer and a group
        length that matches (the caller then leaves the message to pynetdicom).
    """
    values: dict[str, Any] = {}
    pos, end, last = 0, len(raw), -1
    group_length: int | None = None
    try:
        while pos < end:
            group, elem, length = struct.unpack_from("<HHI", raw, pos)
            pos += 8
            if group != 0x0000 or elem <= last or pos + length > end:
                return None
            last = elem
            value = raw[pos : pos + length]
            pos += length
            if elem in _US_ELEMENTS:
                if length != 2:
                    return None
                values[_US_ELEMENTS[elem]] = struct.unpack("<H", value)[0]
            elif elem in _UID_ELEMENTS:
                values[_UID_ELEMENTS[elem]] = _text(value)
            elif elem == 0x0000:
                if length != 4:
                    return None
                group_length = struct.unpack("<I", value)[0]
            elif elem not in _OTHER_ELEMENTS:
                return None
    except (struct.error, UnicodeDecodeError):
        return None
    if group_length is not None and group_length != end - 12:
        return None
    if values.get("command") != _C_STORE_RQ or values.get("dataset_type", _NO_DATASET) == _NO_DATASET:
        return None
    if "message_id" not in values or not values.get("sop_class") or not values.get("sop_instance"):
        return None
    return StoreRequest(int(values["message_id"]), str(values["sop_class"]), str(values["sop_instance"]))


def command_elements(raw: bytes) -> dict[int, bytes] | None:
    """The elements of a command set (implicit VR little endian), by element number.

    Parameters
    ----------
    raw : bytes
        The encoded command set.

    Returns
    -------
    dict or None
        ``{element: value bytes}``, or ``None`` unless every element is in group 0000, in
        ascending order, inside the buffer, and the group length (if any) matches.
    """
    out: dict[int, bytes] = {}
    pos, end, last = 0, len(raw), -1
    try:
        while pos < end:
            group, elem, length = struct.unpack_from("<HHI", raw, pos)
            pos += 8
            if group != 0x0000 or elem <= last or pos + length > end:
                return None
            last = elem
            out[elem] = raw[pos : pos + length]
            pos += length
    except struct.error:
        return None
    group_length = out.get(0x0000)
    if group_length is not None and (len(group_length) != 4 or struct.unpack("<I", group_length)[0] != end - 12):
        return None
    return out


@dataclass
class _Pending:
    context_id: int
    request: StoreRequest
    chunks: list[memoryview] = field(default_factory=list)


class StoreReceiver:
    """The replacement ``receive_primitive`` of one association's DIMSE provider.

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        The association (acceptor side).
    handler : StoreHandler
        Stores one instance and returns ``(status, error comment or None)``; must not raise.
    """

    def __init__(self, assoc: Any, handler: StoreHandler) -> None:
        self.assoc = assoc
        self.handler = handler
        self.dimse = assoc.dimse
        self.original: Callable[[Any], None] = assoc.dimse.receive_primitive
        self.pending: _Pending | None = None

    def _takes(self, context_id: int, req: StoreRequest) -> bool:
        from pynetdicom import _config

        assoc = self.assoc
        cx = assoc._accepted_cx.get(context_id)
        return (
            cx is not None
            and assoc.is_established  # else pynetdicom queues it for the association thread (see fastpath)
            and str(cx.abstract_syntax) == req.sop_class
            and req.sop_class != _VERIFICATION
            and not assoc._sent_release
            and not _config.STORE_RECV_CHUNKED_DATASET
            and not _config.UNRESTRICTED_STORAGE_SERVICE
            and req.sop_class not in assoc.acceptor.accepted_common_extended
        )

    def _hand_over(self, primitive: Any, start: int) -> None:
        if start == 0:
            self.original(primitive)
            return
        from pynetdicom.pdu_primitives import P_DATA

        rest = P_DATA()
        pdvs: list[Any] = [[cx, bytes(data)] for cx, data in primitive.presentation_data_value_list[start:]]
        rest.presentation_data_value_list = pdvs  # pynetdicom's setter wants [ID, bytes] lists
        self.original(rest)

    def _protocol_error(self, why: str) -> None:
        log.error("aborting the association: %s", why)
        self.pending = None
        self.assoc.dul.event_queue.put("Evt19")

    def __call__(self, primitive: Any) -> None:
        """Process one received P-DATA primitive."""
        pdvs: list[tuple[int, bytes]] = primitive.presentation_data_value_list
        for i, (context_id, data) in enumerate(pdvs):
            if self.pending is None:
                req = None
                if self.dimse.message is None and data and data[0] & 3 == 3:
                    req = parse_store_command(data[1:])
                if req is None or not self._takes(context_id, req):
                    self._hand_over(primitive, i)
                    return
                self.pending = _Pending(context_id, req)
                continue
            if not data or data[0] & 1 or context_id != self.pending.context_id:
                self._protocol_error("a C-STORE data set was interrupted by a command or another context")
                return
            self.pending.chunks.append(memoryview(data)[1:])
            if data[0] & 2:
                pending, self.pending = self.pending, None
                self._serve(pending)

    def _serve(self, pending: _Pending) -> None:
        assoc = self.assoc
        req = pending.request
        cx = assoc._accepted_cx[pending.context_id]
        stream = b"".join(pending.chunks)
        pending.chunks.clear()
        status, comment = self.handler(assoc, pending.context_id, req.sop_class, req.sop_instance,
                                       str(cx.transfer_syntax[0]), stream)
        if not assoc.is_established:
            return
        command = encode_response_command(0x8001, req.message_id, status, req.sop_class, req.sop_instance, comment)
        max_pdu = self.dimse.maximum_pdu_size
        # Every status encoded directly (pynetdicom's encoder validates the request's UIDs
        # again, logging them raw, and raises on one over 64 characters).
        if not max_pdu or len(command) + 6 <= max_pdu:
            from pynetdicom.pdu_primitives import P_DATA

            pdata = P_DATA()
            pdata.presentation_data_value_list.append((pending.context_id, b"\x03" + command))
            assoc.dul.send_pdu(pdata)
            return
        from pynetdicom.dimse_primitives import C_STORE

        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = req.message_id
        rsp.AffectedSOPClassUID = req.sop_class
        rsp.AffectedSOPInstanceUID = req.sop_instance
        rsp.Status = status
        if comment is not None:
            rsp.ErrorComment = comment[:64]  # type: ignore[assignment]
        self.dimse.send_msg(rsp, pending.context_id)


def install(assoc: Any, handler: StoreHandler) -> StoreReceiver:
    """Put a :class:`StoreReceiver` in front of one association's DIMSE provider.

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        From an ``EVT_CONN_OPEN`` handler, after :func:`dicom_node.fastpath.install`.
    handler : StoreHandler
        Stores one instance (see :class:`StoreReceiver`).

    Returns
    -------
    StoreReceiver
        The installed receiver.
    """
    receiver = StoreReceiver(assoc, handler)
    assoc.dimse.receive_primitive = receiver
    return receiver
