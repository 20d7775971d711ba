"""Blocking raw-socket helpers for the connection tests, on the PDU encoders of :mod:`tests.support.rawpeer`.

:class:`RawAssociation` opens an association and never raises on a rejection (``result`` says
what came back); :func:`read_pdu` returns ``(0, b"")`` when the node closed. The bytes are
built by ``tests/support/rawpeer.py``, the one encoder of the test suite.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

from tests.support.rawpeer import (
    EXPLICIT_LE,
    IMPLICIT_LE,
    MR_STORAGE,
    VERIFICATION,
    a_abort,
    a_associate_rq,
    a_release_rq,
    c_echo_rq,
    c_store_rq,
    command_set,
    command_values,
    p_data,
)

IMPLICIT, EXPLICIT = IMPLICIT_LE, EXPLICIT_LE
# the names the connection tests use, for rawpeer's encoders
release_rq, abort_rq, echo_rq, store_rq = a_release_rq, a_abort, c_echo_rq, c_store_rq

__all__ = ["EXPLICIT", "IMPLICIT", "MR_STORAGE", "VERIFICATION", "RawAssociation", "abort_rq", "accepted_contexts",
           "associate_rq", "command", "command_fields", "echo_rq", "pdata", "read_pdu", "recv_exact", "release_rq",
           "status_of", "store_rq"]


def associate_rq(calling: str = "TESTSCU", called: str = "MRINODE",
                 contexts: Sequence[tuple[int, str, Sequence[str]]] = ((1, VERIFICATION, (IMPLICIT,)),),
                 max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ PDU."""
    return a_associate_rq([(cid, abstract, list(tss)) for cid, abstract, tss in contexts], called=called,
                          calling=calling, max_pdu=max_pdu)


def command(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """An implicit-VR command set with its group length (elements sorted)."""
    return command_set(sorted(elements))


def pdata(context_id: int, data: bytes, flags: int) -> bytes:
    """A P-DATA-TF PDU with one PDV (``flags``: bit 0 command, bit 1 last fragment)."""
    return p_data([(context_id, flags, data)])


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
    assert flags & 1, "not a command fragment"
    return command_values(pdata_body[6 : 4 + length])


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
