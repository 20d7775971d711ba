"""A raw-socket DICOM peer for the connection tests: PDUs built and read by hand."""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

VERIFICATION = "1.2.840.10008.1.1"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
_APP_CONTEXT = "1.2.840.10008.3.1.1.1"


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)[:16]


def associate_rq(calling: str = "TESTSCU", called: str = "MRINODE",
                 contexts: Sequence[tuple[int, str, Sequence[str]]] = ((1, VERIFICATION, (IMPLICIT,)),),
                 max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ PDU."""
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32)
    body += _item(0x10, _APP_CONTEXT.encode())
    for cx_id, abstract, tss in contexts:
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in tss)
        body += _item(0x20, struct.pack(">BBBB", cx_id, 0, 0, 0) + sub)
    user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, b"1.2.3.4")
    body += _item(0x50, user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def release_rq() -> bytes:
    """An A-RELEASE-RQ PDU."""
    return struct.pack(">BBIxxxx", 0x05, 0, 4)


def abort_rq() -> bytes:
    """An A-ABORT PDU (service-user)."""
    return struct.pack(">BBIBBBB", 0x07, 0, 4, 0, 0, 0, 0)


def _el(elem: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, elem, len(value)) + value


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def command(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """An implicit-VR command set with its group length."""
    body = b"".join(_el(e, v) for e, v in sorted(elements))
    return _el(0x0000, struct.pack("<I", len(body))) + body


def echo_rq(message_id: int, sop_class: str = VERIFICATION) -> bytes:
    """A C-ECHO-RQ command set."""
    return command([(0x0002, _uid(sop_class)), (0x0100, struct.pack("<H", 0x0030)),
                    (0x0110, struct.pack("<H", message_id)), (0x0800, struct.pack("<H", 0x0101))])


def store_rq(message_id: int, sop_class: str, sop_instance: str | None) -> bytes:
    """A C-STORE-RQ command set (a data set follows); ``sop_instance=None`` leaves the UID out."""
    els = [(0x0002, _uid(sop_class)), (0x0100, struct.pack("<H", 0x0001)),
           (0x0110, struct.pack("<H", message_id)), (0x0700, struct.pack("<H", 0)),
           (0x0800, struct.pack("<H", 0x0000))]
    if sop_instance is not None:
        els.append((0x1000, _uid(sop_instance)))
    return command(els)


def pdata(context_id: int, data: bytes, flags: int) -> bytes:
    """A P-DATA-TF PDU with one PDV (``flags``: bit 0 command, bit 1 last fragment)."""
    pdv = struct.pack(">IBB", len(data) + 2, context_id, flags) + data
    return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes (fewer when the peer closes)."""
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """One PDU as ``(type, body)``; ``(0, b"")`` when the peer closed."""
    head = recv_exact(sock, 6)
    if len(head) < 6:
        return 0, b""
    kind, _, length = struct.unpack(">BBI", head)
    return kind, recv_exact(sock, length)


def accepted_contexts(ac_body: bytes) -> dict[int, int]:
    """``{context id: result}`` from an A-ASSOCIATE-AC body."""
    pos, out = 68, {}
    while pos + 4 <= len(ac_body):
        kind, _, length = struct.unpack_from(">BBH", ac_body, pos)
        if kind == 0x21:
            out[ac_body[pos + 4]] = ac_body[pos + 6]
        pos += 4 + length
    return out


def command_fields(pdata_body: bytes) -> dict[int, bytes]:
    """The command elements of the (single, last) command PDV of a P-DATA-TF body."""
    length, _cx, flags = struct.unpack_from(">IBB", pdata_body, 0)
    data = pdata_body[6 : 4 + length]
    assert flags & 1, "not a command fragment"
    out, pos = {}, 0
    while pos + 8 <= len(data):
        _g, elem, n = struct.unpack_from("<HHI", data, pos)
        out[elem] = data[pos + 8 : pos + 8 + n]
        pos += 8 + n
    return out


def status_of(pdata_body: bytes) -> int:
    """The Status of a DIMSE response in a P-DATA-TF body."""
    return int(struct.unpack("<H", command_fields(pdata_body)[0x0900])[0])


class RawAssociation:
    """One association opened with raw PDUs.

    Parameters
    ----------
    port : int
        The SCP's port on 127.0.0.1.
    contexts : sequence
        ``(id, abstract syntax, transfer syntaxes)`` to propose.
    source : str
        The local address to connect from (any 127/8 address).
    """

    def __init__(self, port: int, contexts: Sequence[tuple[int, str, Sequence[str]]] = ((1, VERIFICATION, (IMPLICIT,)),),
                 source: str = "127.0.0.1", calling: str = "TESTSCU", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(associate_rq(calling=calling, contexts=contexts))
        kind, body = read_pdu(self.sock)
        self.result = kind
        self.contexts = accepted_contexts(body) if kind == 0x02 else {}

    def echo(self, message_id: int, context_id: int = 1, sop_class: str = VERIFICATION) -> int:
        """Send a C-ECHO-RQ and return the response status (-1 when none came)."""
        self.sock.sendall(pdata(context_id, echo_rq(message_id, sop_class), 0x03))
        kind, body = read_pdu(self.sock)
        return status_of(body) if kind == 0x04 else -1

    def release(self) -> None:
        """Release and close."""
        try:
            self.sock.sendall(release_rq())
            read_pdu(self.sock)
        except OSError:
            pass
        self.sock.close()

    def close(self) -> None:
        """Close without release."""
        self.sock.close()
