"""The SCP's accept loop: connections held, without threads, until they ask to associate.

:class:`Gate` replaces the accept loop of pynetdicom's ``ThreadedAssociationServer``. One
thread accepts every connection and holds it until its A-ASSOCIATE-RQ PDU has arrived whole
(TLS handshake included); only then is it given to pynetdicom (with the bytes already read).
A connection that has not sent its request within ``association_timeout_s`` is closed
(dcmtk's ARTIM timer, PS3.8 §9.1.5); at most ``max_pending_per_host`` such connections per
host and ``max_pending`` in all are held, the oldest closed to make room. The per-association
limits are in :mod:`dicom_node.netguard`.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
import types
import weakref
from dataclasses import dataclass
from typing import Any

from dicom_node.netguard import ASSOCIATE_MAX, DropCounter, Limits

__all__ = ["Gate"]

log = logging.getLogger(__name__)

_SELECT_CEILING_S = 0.5
_ABORT_PDU = struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0x02, 0x06)  # provider, invalid PDU parameter value


@dataclass(eq=False)
class _Pending:
    sock: socket.socket
    addr: Any
    host: str
    deadline: float
    buf: bytearray
    fd: int = -1
    need: int | None = None
    handshaking: bool = False
    done: bool = False


class Gate:
    """The accept loop of one ``ThreadedAssociationServer``, with pre-association limits.

    Parameters
    ----------
    server : pynetdicom.transport.ThreadedAssociationServer
        A server made by ``ae.make_server`` and not started.
    limits : Limits
        The limits.
    on_drop : callable
        Called with the reason of each connection closed here.
    """

    def __init__(self, server: Any, limits: Limits, on_drop: DropCounter) -> None:
        self.server = server
        self.limits = limits
        self.on_drop = on_drop
        self._ssl: ssl.SSLContext | None = server.ssl_context
        self._sel = selectors.DefaultSelector()
        self._pending: dict[int, _Pending] = {}  # by descriptor, oldest first
        self._by_host: dict[str, dict[int, _Pending]] = {}
        self._prefix: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()
        self._prefix_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()
        server.process_request = self._never
        server.handle_error = types.MethodType(_handle_error, server)
        server.shutdown = self.shutdown

    @staticmethod
    def _never(request: Any, client_address: Any) -> None:  # pragma: no cover - the gate does not call it
        raise RuntimeError("connections are admitted by the gate")

    # -------------------------------------------------------------- public
    @property
    def pending(self) -> int:
        """Connections held now (not yet given to pynetdicom)."""
        return len(self._pending)

    def start(self) -> None:
        """Start the accept loop in a daemon thread."""
        # socketserver listens with a backlog of 5: a burst of connections would see its
        # SYNs dropped (and retried after 1 s, 3 s, ...) while the gate is not scheduled.
        self.server.socket.listen(max(128, self.limits.max_pending))
        self.server.socket.setblocking(False)
        self._sel.register(self.server.socket, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._serve, name="mrinode-dicom-gate", daemon=True)
        self._thread.start()

    def take_prefix(self, sock: Any) -> bytes:
        """The bytes already read from ``sock`` (its A-ASSOCIATE-RQ PDU), once."""
        with self._prefix_lock:
            try:
                return self._prefix.pop(sock)
            except (KeyError, TypeError):
                return b""

    def stop_accepting(self) -> None:
        """Stop the loop, close the pending connections and the listening socket (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\x00")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()
        with contextlib.suppress(OSError, AttributeError):
            self.server.socket.close()

    def shutdown(self) -> None:
        """``server.shutdown``: stop accepting, close the server, forget it in its AE."""
        self.stop_accepting()
        with contextlib.suppress(OSError, AttributeError):
            self.server.server_close()
        with contextlib.suppress(ValueError, AttributeError):
            self.server.ae._servers.remove(self.server)

    # ---------------------------------------------------------------- loop
    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                timeout = _SELECT_CEILING_S
                if self._pending:
                    first = next(iter(self._pending.values()))
                    timeout = max(0.0, min(timeout, first.deadline - time.monotonic()))
                try:
                    events = self._sel.select(timeout)
                except (OSError, ValueError) as exc:  # pragma: no cover - defensive
                    log.error("DICOM accept loop: select failed (%s)", exc)
                    time.sleep(0.05)
                    continue
                for key, mask in events:
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    elif not key.data.done:
                        self._progress(key.data, mask)
                self._expire()
        except Exception as exc:  # pragma: no cover - must never die silently
            log.critical("DICOM accept loop failed (%s: %s)", type(exc).__name__, exc)
        finally:
            for conn in list(self._pending.values()):
                self._close(conn, None)
            with contextlib.suppress(Exception):
                self._sel.close()

    def _accept(self) -> None:
        lsock = self.server.socket
        for _ in range(64):
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS...: keep the loop alive, retry soon
                log.warning("cannot accept a DICOM connection (%s)", exc.strerror or exc)
                self.on_drop("accept_error")
                time.sleep(0.05)
                return
            self._admit(sock, addr)
        self.server.service_actions()

    def _admit(self, sock: socket.socket, addr: Any) -> None:
        host = str(addr[0]) if isinstance(addr, tuple) else str(addr)
        lim = self.limits
        same_host = self._by_host.get(host, {})
        while len(same_host) >= lim.max_pending_per_host:
            self._close(next(iter(same_host.values())), "host_cap")
        while len(self._pending) >= lim.max_pending:
            self._close(next(iter(self._pending.values())), "pending_cap")
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Pending(sock, addr, host, time.monotonic() + lim.association_timeout_s, bytearray())
            if self._ssl is not None:
                conn.sock = self._ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                conn.handshaking = True
            fd = conn.fd = conn.sock.fileno()
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)
        except (OSError, ValueError) as exc:
            log.info("closing a new DICOM connection from %s (%s)", host, exc)
            with contextlib.suppress(OSError):
                sock.close()
            self.on_drop("accept_error")
            return
        self._pending[fd] = conn
        self._by_host.setdefault(host, {})[fd] = conn

    def _forget(self, conn: _Pending) -> None:
        if conn.done:
            return
        conn.done = True
        fd = conn.fd
        if self._pending.get(fd) is conn:
            del self._pending[fd]
        same_host = self._by_host.get(conn.host)
        if same_host is not None:
            same_host.pop(fd, None)
            if not same_host:
                del self._by_host[conn.host]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(conn.sock)

    def _close(self, conn: _Pending, reason: str | None, abort: bool = False) -> None:
        self._forget(conn)
        if reason is not None:  # counted first: whoever sees the close sees the count
            log.info("closing a DICOM connection from %s before association (%s)", conn.host, reason)
            self.on_drop(reason)
        if abort:
            with contextlib.suppress(OSError, ValueError):
                conn.sock.send(_ABORT_PDU)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _expire(self) -> None:
        now = time.monotonic()
        while self._pending:
            first = next(iter(self._pending.values()))
            if first.deadline > now:
                return
            self._close(first, "artim")

    def _progress(self, conn: _Pending, mask: int) -> None:
        s = conn.sock
        if conn.handshaking:
            assert isinstance(s, ssl.SSLSocket)
            try:
                s.do_handshake()
            except ssl.SSLWantReadError:
                self._sel.modify(s, selectors.EVENT_READ, conn)
                return
            except ssl.SSLWantWriteError:
                self._sel.modify(s, selectors.EVENT_WRITE, conn)
                return
            except (ssl.SSLError, OSError, ValueError):
                self._close(conn, "tls")
                return
            conn.handshaking = False
            self._sel.modify(s, selectors.EVENT_READ, conn)
        while True:
            want = 6 - len(conn.buf) if conn.need is None else conn.need - len(conn.buf)
            try:
                chunk = s.recv(want)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                self._sel.modify(s, selectors.EVENT_WRITE, conn)
                return
            except (OSError, ValueError):
                self._close(conn, "reset")
                return
            if not chunk:
                self._close(conn, "closed")
                return
            conn.buf += chunk
            if conn.need is None and len(conn.buf) == 6:
                pdu_type, _, length = struct.unpack(">BBL", conn.buf)
                if pdu_type == 0x07:  # A-ABORT in Sta2: close (PS3.8 AA-2)
                    self._close(conn, "aborted")
                    return
                if pdu_type != 0x01:  # anything else in Sta2: A-ABORT and close (PS3.8 AA-1)
                    self._close(conn, "bad_pdu", abort=True)
                    return
                if length > ASSOCIATE_MAX:
                    log.warning("A-ASSOCIATE-RQ from %s announces %d bytes (limit %d): aborted", conn.host, length,
                                ASSOCIATE_MAX)
                    self._close(conn, "pdu_too_large", abort=True)
                    return
                conn.need = 6 + length
            if conn.need is not None and len(conn.buf) >= conn.need:
                rejection = _bad_ae_titles(conn.buf)
                if rejection is not None:
                    # pynetdicom would log the raw titles (control characters, newlines
                    # included) before rejecting them: refuse them here, unquoted.
                    log.warning("A-ASSOCIATE-RQ from %s refused: an AE title holds control characters or a backslash",
                                conn.host)
                    self.on_drop("bad_ae_title")
                    with contextlib.suppress(OSError, ValueError):
                        conn.sock.send(rejection)
                    self._close(conn, None)
                    return
                self._hand_over(conn)
                return

    def _hand_over(self, conn: _Pending) -> None:
        from socketserver import ThreadingMixIn

        self._forget(conn)
        s = conn.sock
        try:
            s.setblocking(True)
            with self._prefix_lock:
                self._prefix[s] = bytes(conn.buf)
            ThreadingMixIn.process_request(self.server, s, conn.addr)
        except Exception as exc:  # RuntimeError: can't start new thread, OSError
            log.warning("cannot serve a DICOM connection from %s (%s)", conn.host, exc)
            with self._prefix_lock:
                self._prefix.pop(s, None)
            with contextlib.suppress(OSError):
                s.close()
            self.on_drop("no_thread")


def _bad_ae_titles(pdu: bytes | bytearray) -> bytes | None:
    """The A-ASSOCIATE-RJ PDU to answer when an AE title of this A-ASSOCIATE-RQ is invalid.

    PS3.5 §6.2: an AE title is at most 16 characters of the Default Character Repertoire
    without control characters or backslash. Called AE title (bytes 10-25) invalid:
    result permanent, source service-user, reason "called AE title not recognized" (7);
    calling AE title (bytes 26-41): reason "calling AE title not recognized" (3)
    (PS3.8 §9.3.4).
    """
    if len(pdu) < 42:
        return None
    for start, reason in ((10, 0x07), (26, 0x03)):
        title = pdu[start : start + 16]
        if any(b < 0x20 or b == 0x5C or b > 0x7E for b in title):
            return struct.pack(">BBLBBBB", 0x03, 0, 4, 0, 0x01, 0x01, reason)
    return None


def _handle_error(self: Any, request: Any, client_address: Any) -> None:
    """``server.handle_error`` without the traceback on stderr (socketserver prints one)."""
    import sys

    exc = sys.exc_info()[1]
    log.error("error while opening an association from %s (%s)",
              client_address[0] if isinstance(client_address, tuple) else client_address, type(exc).__name__)
