"""A scripted raw-socket DICOM peer: the sloppy and hostile things a network does to a node.

It speaks the Upper Layer protocol (PS3.8) byte by byte, so it can do what no well-behaved
toolkit does: connect and close, sit idle, send half a PDU header, announce a 4 GiB PDU,
follow an A-ASSOCIATE-RQ with garbage, send malformed command sets or a C-STORE on the
Verification context, or abort in the middle of a data set.

Usage::

    peer = RawPeer("127.0.0.1", port)
    peer.associate([(1, VERIFICATION, [IMPLICIT_LE])])        # -> A-ASSOCIATE-AC or raises
    peer.send_command(1, c_echo_rq(1))
    rsp = peer.read_response(timeout=1.0)                      # -> Response(command, status)
    peer.release()

Every method that waits takes a timeout; none blocks forever.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field

__all__ = [
    "EXPLICIT_LE",
    "IMPLICIT_LE",
    "MR_STORAGE",
    "VERIFICATION",
    "PeerClosedError",
    "RawPeer",
    "Response",
    "a_abort",
    "a_associate_rq",
    "a_release_rq",
    "c_echo_rq",
    "c_store_rq",
    "command_set",
    "command_values",
    "p_data",
]

VERIFICATION = "1.2.840.10008.1.1"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.999"

#: PDU types (PS3.8 9.3).
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07


class PeerClosedError(ConnectionError):
    """The node closed the connection (or reset it)."""


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def a_associate_rq(
    contexts: list[tuple[int, str, list[str]]],
    *,
    called: str = "MRINODE",
    calling: str = "TESTSCU",
    max_pdu: int = 16384,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU.

    Parameters
    ----------
    contexts : list of (int, str, list of str)
        ``(context ID (odd), abstract syntax, transfer syntaxes)``.
    called, calling : str
        AE titles (at most 16 characters).
    max_pdu : int
        The maximum PDU length the peer receives (0: unlimited).

    Returns
    -------
    bytes
        The encoded PDU.
    """
    body = struct.pack(">HH16s16s32s", 1, 0, called.encode().ljust(16), calling.encode().ljust(16), b"")
    body += _item(0x10, APPLICATION_CONTEXT.encode())
    for cid, abstract, syntaxes in contexts:
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        body += _item(0x20, struct.pack(">BBBB", cid, 0, 0, 0) + sub)
    user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, IMPLEMENTATION_UID.encode())
    body += _item(0x50, user)
    return _pdu(A_ASSOCIATE_RQ, body)


def p_data(pdvs: list[tuple[int, int, bytes]]) -> bytes:
    """A P-DATA-TF PDU.

    Parameters
    ----------
    pdvs : list of (int, int, bytes)
        ``(context ID, message control header, fragment)``; the header's bit 0 says command
        (1) or data set (0), bit 1 last fragment (1).

    Returns
    -------
    bytes
        The encoded PDU.
    """
    body = b"".join(struct.pack(">IBB", len(data) + 2, cid, mch) + data for cid, mch, data in pdvs)
    return _pdu(P_DATA_TF, body)


def a_release_rq() -> bytes:
    """An A-RELEASE-RQ PDU."""
    return _pdu(A_RELEASE_RQ, b"\x00" * 4)


def a_abort(source: int = 0, reason: int = 0) -> bytes:
    """An A-ABORT PDU (source 0: service user)."""
    return _pdu(A_ABORT, struct.pack(">BBBB", 0, 0, source, reason))


def command_set(elements: list[tuple[int, bytes]], group_length: bool = True) -> bytes:
    """Encode a command set (group 0000, implicit VR little endian) from raw element values.

    Parameters
    ----------
    elements : list of (int, bytes)
        ``(element number, value)`` in the order to write them (not sorted, not padded: the
        caller may break the rules on purpose).
    group_length : bool
        Whether to start with (0000,0000).

    Returns
    -------
    bytes
        The encoded command set.
    """
    raw = b"".join(struct.pack("<HHI", 0, elem, len(value)) + value for elem, value in elements)
    if group_length:
        raw = struct.pack("<HHII", 0, 0, 4, len(raw)) + raw
    return raw


def c_echo_rq(message_id: int, sop_class: str = VERIFICATION) -> bytes:
    """A C-ECHO-RQ command set (another ``sop_class`` makes a wrong one on purpose)."""
    return command_set([(0x0002, _uid(sop_class)), (0x0100, struct.pack("<H", 0x0030)),
                        (0x0110, struct.pack("<H", message_id)), (0x0800, struct.pack("<H", 0x0101))])


def c_store_rq(message_id: int, sop_class: str | None, sop_instance: str | None) -> bytes:
    """A C-STORE-RQ command set; ``None`` leaves a UID element out (``""`` sends it empty)."""
    elements: list[tuple[int, bytes]] = []
    if sop_class is not None:
        elements.append((0x0002, _uid(sop_class)))
    elements += [(0x0100, struct.pack("<H", 0x0001)), (0x0110, struct.pack("<H", message_id)),
                 (0x0700, struct.pack("<H", 0)), (0x0800, struct.pack("<H", 0x0000))]
    if sop_instance is not None:
        elements.append((0x1000, _uid(sop_instance)))
    return command_set(elements)


def command_values(raw: bytes) -> dict[int, bytes]:
    """``{element: value}`` of an implicit-VR command set."""
    values: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(raw):
        _group, elem, length = struct.unpack_from("<HHI", raw, pos)
        values[elem] = raw[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return values


@dataclass
class Response:
    """A DIMSE response read back: its command field, status and context."""

    context_id: int
    command: int
    status: int | None
    values: dict[int, bytes] = field(default_factory=dict)


@dataclass
class RawPeer:
    """One TCP connection to the node, driven PDU by PDU.

    Parameters
    ----------
    host, port : str, int
        The node.
    source : str, optional
        Local address to bind (another loopback address, ``127.0.0.2``, is another host).
    timeout : float
        Connect timeout.
    """

    host: str
    port: int
    source: str | None = None
    timeout: float = 5.0
    sock: socket.socket = field(init=False)
    accepted: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.source:
            self.sock.bind((self.source, 0))
        self.sock.settimeout(self.timeout)
        self.sock.connect((self.host, self.port))

    # ----------------------------------------------------------------- bytes
    def send(self, data: bytes) -> None:
        """Send raw bytes (raises :class:`PeerClosedError` if the node has gone)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise PeerClosedError(str(exc)) from None

    def _recv_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer within the timeout ({len(buf)} of {n} bytes)")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except ConnectionResetError:
                raise PeerClosedError("connection reset") from None
            except TimeoutError:
                raise TimeoutError(f"no answer within the timeout ({len(buf)} of {n} bytes)") from None
            if not chunk:
                raise PeerClosedError("the node closed the connection")
            buf += chunk
        return bytes(buf)

    def read_pdu(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next PDU from the node: ``(type, body)``.

        Raises
        ------
        PeerClosedError
            If the node closed the connection.
        TimeoutError
            If nothing whole came within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        kind, _, length = struct.unpack(">BBI", self._recv_exact(6, deadline))
        if length > 1 << 26:
            raise ValueError(f"the node announced a PDU of {length} bytes")
        return kind, self._recv_exact(length, deadline)

    def closed_within(self, timeout: float) -> bool:
        """Whether the node closes the connection (reading and dropping what it sends) in time."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False

    def close(self) -> None:
        """Close the socket (no release, no abort)."""
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- protocol
    def associate(self, contexts: list[tuple[int, str, list[str]]], timeout: float = 5.0, **kwargs: object) -> bytes:
        """Send an A-ASSOCIATE-RQ and wait for the A-ASSOCIATE-AC.

        Returns
        -------
        bytes
            The AC's body; :attr:`accepted` lists the accepted context IDs.

        Raises
        ------
        ConnectionError
            If the node rejects (A-ASSOCIATE-RJ) or aborts.
        """
        self.send(a_associate_rq(contexts, **kwargs))  # type: ignore[arg-type]
        kind, body = self.read_pdu(timeout)
        if kind != A_ASSOCIATE_AC:
            raise ConnectionError(f"association not accepted: PDU type 0x{kind:02X} {body[:16].hex()}")
        pos = 68
        while pos + 4 <= len(body):
            item, _, length = struct.unpack_from(">BBH", body, pos)
            if item == 0x21 and body[pos + 6] == 0:  # presentation context, result acceptance
                self.accepted.append(body[pos + 4])
            pos += 4 + length
        return body

    def send_command(self, context_id: int, command: bytes) -> None:
        """Send a whole command set in one PDV."""
        self.send(p_data([(context_id, 0x03, command)]))

    def send_dataset(self, context_id: int, data: bytes, fragment: int = 16000, last: bool = True) -> None:
        """Send a data set in fragments (the last one flagged when ``last``)."""
        chunks = [data[i : i + fragment] for i in range(0, len(data), fragment)] or [b""]
        for i, chunk in enumerate(chunks):
            flag = 0x02 if last and i == len(chunks) - 1 else 0x00
            self.send(p_data([(context_id, flag, chunk)]))

    def read_response(self, timeout: float = 5.0) -> Response:
        """Read PDUs until a whole DIMSE command arrives; return its command field and status.

        Raises
        ------
        PeerClosedError, TimeoutError
            As :meth:`read_pdu`; ``ConnectionError`` when the node sends an A-ABORT.
        """
        deadline = time.monotonic() + timeout
        command = b""
        while True:
            kind, body = self.read_pdu(max(0.0, deadline - time.monotonic()))
            if kind == A_ABORT:
                raise ConnectionError(f"the node aborted the association ({body.hex()})")
            if kind != P_DATA_TF:
                raise ConnectionError(f"unexpected PDU type 0x{kind:02X}")
            pos = 0
            while pos + 6 <= len(body):
                length, cid, mch = struct.unpack_from(">IBB", body, pos)
                command += body[pos + 6 : pos + 4 + length] if mch & 1 else b""
                pos += 4 + length
                if mch & 1 and mch & 2:
                    values = command_values(command)
                    status = values.get(0x0900)
                    return Response(cid, struct.unpack("<H", values.get(0x0100, b"\x00\x00")[:2])[0],
                                    struct.unpack("<H", status[:2])[0] if status else None, values)

    def release(self, timeout: float = 5.0) -> bool:
        """Send A-RELEASE-RQ; whether the A-RELEASE-RP came. The socket is closed after."""
        try:
            self.send(a_release_rq())
            kind, _ = self.read_pdu(timeout)
            return kind == A_RELEASE_RP
        except (ConnectionError, TimeoutError):
            return False
        finally:
            self.close()

    def abort(self) -> None:
        """Send A-ABORT and close."""
        with contextlib.suppress(ConnectionError, OSError):
            self.send(a_abort())
        self.close()
