"""Event-driven reactors for pynetdicom associations (latency, not semantics).

pynetdicom 3 runs two polling loops per association: the DUL thread sleeps 1 ms
between socket checks and the association thread sleeps 1 ms between DIMSE-queue checks.
Every C-STORE crosses both loops several times, so on a busy 2-core machine each hop
costs a scheduler wake-up and a one-association transfer is bounded by those sleeps,
not by the work. :func:`install` (called from the ``EVT_CONN_OPEN`` handler, before the
association's threads start) replaces, on that one association only:

* the DUL loop's sleep by ``poll`` on the peer socket plus a wake-up socket that is
  signalled whenever the association thread queues a primitive to send (``poll``, not
  ``select``: descriptors above 1 024 are ordinary on a busy node);
* the association loop's sleep-and-poll by a blocking ``get`` on the DIMSE message
  queue, woken as well when the DUL hands an A-RELEASE/A-ABORT to the user;
* the hand-off of each complete C-STORE/C-ECHO request from the DUL thread to the
  association thread: the request is served in the DUL thread itself, right where it was
  decoded, and its response is sent on the DUL loop's next turn. One thread per
  association does the work (as in dcmtk and Orthanc), with no thread wake-up per
  request; the association thread still handles release, abort and timeouts;
* the encoding of successful C-STORE and C-ECHO responses: their command set (a handful
  of implicit-VR elements) is written directly instead of through a pydicom dataset.
  Any other response goes through pynetdicom unchanged;
* (with :mod:`dicom_node.fastdimse`, installed next) C-STORE requests are read from the
  P-DATA fragments directly; what it leaves to pynetdicom is served inline as above;
* pynetdicom's standard logging handlers (which format every PDU and DIMSE message for
  INFO/DEBUG lines) are unbound when the ``pynetdicom`` logger would drop those lines.

The loops' bodies are otherwise those of pynetdicom 3.0 (state machine, timers, kill
flags), with a 50 ms ceiling on every wait so timers and kill flags are still checked.
Nothing global is changed. Works with TLS sockets (pending TLS bytes skip the wait).

These are patches of pynetdicom's internals, written for pynetdicom
:data:`WRITTEN_FOR` (3.0.x). :func:`install` first checks the installed release and that
every private attribute it (and :mod:`dicom_node.fastdimse`) patches or calls exists, and
installs all of its patches or none: on another release, or with an attribute missing,
the association runs on plain pynetdicom (slower, same semantics) and one warning per
process says why (:func:`unsupported`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import queue
import select
import socket
import ssl
import struct
import threading
import types
from typing import Any

__all__ = ["WRITTEN_FOR", "CheapCopyContexts", "encode_response_command", "install", "missing_attributes", "unsupported"]

log = logging.getLogger(__name__)

#: The pynetdicom release (major, minor) whose internals these patches were written for.
WRITTEN_FOR: tuple[int, int] = (3, 0)

#: What the patches (here and in :mod:`dicom_node.fastdimse`) replace or call, looked up
#: on pynetdicom's modules and classes: ``"module:object"`` and its attributes.
_NEEDED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pynetdicom.dul:DULServiceProvider", ("run_reactor", "_process_recv_primitive", "_is_transport_event",
                                           "idle_timer_expired", "receive_pdu", "send_pdu", "is_alive")),
    ("pynetdicom.association:Association", ("_run_reactor", "_serve_request", "kill", "abort", "unbind")),
    ("pynetdicom.dimse:DIMSEServiceProvider", ("send_msg", "receive_primitive", "maximum_pdu_size")),
    ("pynetdicom.acse:ACSE", ("is_release_requested", "is_aborted", "send_release")),
    ("pynetdicom.pdu", ("A_ABORT_RQ",)),
    ("pynetdicom.pdu_primitives", ("P_DATA",)),
    ("pynetdicom.dimse_primitives", ("C_STORE",)),
    ("pynetdicom.utils", ("make_target",)),
    ("pynetdicom._config", ("STORE_RECV_CHUNKED_DATASET", "UNRESTRICTED_STORAGE_SERVICE")),
    ("pynetdicom.events", ("trigger", "EVT_RELEASED", "EVT_ABORTED")),
    ("pynetdicom.fsm", ("InvalidEventError",)),
)

#: Instance attributes (set in pynetdicom's ``__init__``) read or replaced on each association.
_NEEDED_ON_INSTANCE: dict[str, tuple[str, ...]] = {
    "assoc": ("dul", "dimse", "acse", "_dul_ready", "_reactor_checkpoint", "_accepted_cx", "_sent_release",
              "_kill", "is_established", "is_aborted", "is_released", "_is_paused", "acceptor"),
    "dul": ("to_provider_queue", "to_user_queue", "event_queue", "_idle_timer", "artim_timer", "state_machine",
            "_kill_thread", "socket", "assoc", "_target"),
    "dimse": ("msg_queue", "message"),
}

_check_lock = threading.Lock()
_checked: list[str | None] = []  # the process's verdict, once computed: [reason or None]
_warned = False

_MAX_WAIT_S = 0.05
_SERVED_INLINE = frozenset({"C_STORE", "C_ECHO"})
#: The DUL events made from a primitive at the head of ``to_provider_queue``.
_PRIMITIVE_EVENTS = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})


def _wake(sock: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        sock.send(b"\x00")


def _buffered(dul: Any, raw: Any) -> bool:
    """Whether bytes wait that the descriptor's readiness would not show (TLS, pre-read)."""
    reader = getattr(dul, "_mrinode_reader", None)
    if reader is not None and reader.buffered:
        return True
    return isinstance(raw, ssl.SSLSocket) and raw.fileno() >= 0 and raw.pending() > 0


def _wait(dul: Any, poller: select.poll, watched: list[int], wake_r: socket.socket) -> None:
    """Wait up to ``_MAX_WAIT_S`` for the peer socket or the wake-up socket."""
    raw = getattr(dul.socket, "socket", None)
    fd = raw.fileno() if raw is not None and dul.socket._is_connected else -1
    if watched[0] != fd:
        if watched[0] >= 0:
            with contextlib.suppress(KeyError, OSError, ValueError):
                poller.unregister(watched[0])
        if fd >= 0:
            poller.register(fd, select.POLLIN)
        watched[0] = fd
    if _buffered(dul, raw) or not dul.to_provider_queue.empty():
        return
    try:
        events = poller.poll(_MAX_WAIT_S * 1000)
    except (OSError, ValueError):
        events = []
    if any(efd == wake_r.fileno() for efd, _ in events):
        with contextlib.suppress(BlockingIOError, OSError):
            wake_r.recv(4096)


def _dul_reactor(self: Any) -> None:
    """pynetdicom's ``DULServiceProvider.run_reactor`` with an event-driven wait."""
    from pynetdicom.fsm import InvalidEventError

    wake_r: socket.socket = self._mrinode_wake_r
    poller = select.poll()
    poller.register(wake_r.fileno(), select.POLLIN)
    watched = [-1]
    self._idle_timer.start()
    sleep = False
    try:
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True
            if sleep:
                _wait(self, poller, watched, wake_r)
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:  # mirrors pynetdicom: abort the association, never crash the thread
                log.error("exception in the DUL reactor, aborting the association: %s", exc)
                abort_pdu = self._abort_pdu_class()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                with contextlib.suppress(OSError):
                    self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue
            try:
                self.state_machine.do_action(event)
            except InvalidEventError as exc:  # an event this state has no action for
                # e.g. a local A-ABORT request (Evt15) while the DUL waits for the peer to
                # close after a release (Sta13): drop the primitive that raised it, or it
                # would raise again on every turn until the ARTIM timer fires.
                log.info("DUL event ignored (%s)", exc)
                if event in _PRIMITIVE_EVENTS:
                    with contextlib.suppress(queue.Empty):
                        self.to_provider_queue.get(block=False)
            sleep = False
    finally:
        for s in (self._mrinode_wake_r, self._mrinode_wake_w):
            with contextlib.suppress(OSError):
                s.close()


def _assoc_reactor(self: Any) -> None:
    """pynetdicom's ``Association._run_reactor`` with a blocking wait on the DIMSE queue."""
    from pynetdicom import evt

    self._is_paused = False
    while not self._kill:
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False
        try:
            context_id, msg = self.dimse.msg_queue.get(block=True, timeout=_MAX_WAIT_S)
        except queue.Empty:
            context_id, msg = None, None
        if msg:
            self._serve_request(msg, context_id)
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return
        if not self.dul.is_alive():
            self.kill()
            return
        if self.dul.idle_timer_expired():
            log.error("network timeout reached; aborting the association")
            self.abort()
            self.kill()
            return


def _el(elem: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, elem, len(value)) + value


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _lo(text: str) -> bytes:
    raw = text.encode("ascii", "replace")[:64]
    return raw + b" " if len(raw) % 2 else raw


def encode_response_command(command_field: int, message_id: int, status: int, sop_class: str | None,
                            sop_instance: str | None, error_comment: str | None = None) -> bytes:
    """Encode a DIMSE-C response command set without data set (implicit VR little endian).

    Empty or ``None`` UIDs and error comment are left out; the error comment is cut to 64
    characters (LO).
    """
    body = b"".join([
        _el(0x0002, _uid(sop_class)) if sop_class else b"",
        _el(0x0100, struct.pack("<H", command_field)),
        _el(0x0120, struct.pack("<H", message_id)),
        _el(0x0800, struct.pack("<H", 0x0101)),
        _el(0x0900, struct.pack("<H", status)),
        _el(0x0902, _lo(error_comment)) if error_comment else b"",
        _el(0x1000, _uid(sop_instance)) if sop_instance else b"",
    ])
    return _el(0x0000, struct.pack("<I", len(body))) + body


def _fast_send_msg(self: Any, primitive: Any, context_id: int) -> None:
    """``DIMSEServiceProvider.send_msg`` with a direct encoder for plain successful C-STORE/C-ECHO responses."""
    from pynetdicom.pdu_primitives import P_DATA

    kind = type(primitive).__name__
    plain = (
        primitive.MessageIDBeingRespondedTo is not None
        and kind in _SERVED_INLINE
        and primitive.Status == 0x0000
        and getattr(primitive, "ErrorComment", None) is None
    )
    if plain:
        command = encode_response_command(
            0x8001 if kind == "C_STORE" else 0x8030, int(primitive.MessageIDBeingRespondedTo), 0x0000,
            str(primitive.AffectedSOPClassUID), str(primitive.AffectedSOPInstanceUID) if kind == "C_STORE" else None,
        )
        max_pdu = self.maximum_pdu_size
        if not max_pdu or len(command) + 6 <= max_pdu:
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
            self.dul.send_pdu(pdata)
            return
    self._mrinode_send_msg(primitive, context_id)


class CheapCopyContexts(list):  # type: ignore[type-arg]
    """The SCP's supported presentation contexts, copied cheaply for each association.

    pynetdicom deep-copies the server's contexts for every association (about 3,400
    transfer-syntax UIDs re-validated one by one here); a shallow copy of each context
    with its own transfer-syntax list is equivalent, since UIDs are immutable.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> CheapCopyContexts:
        import copy

        out = CheapCopyContexts()
        for cx in self:
            clone = copy.copy(cx)
            clone._transfer_syntax = list(cx._transfer_syntax)
            clone._as_scu = cx._as_scu
            clone._as_scp = cx._as_scp
            out.append(clone)
        return out


def missing_attributes(needed: tuple[tuple[str, tuple[str, ...]], ...]) -> list[str]:
    """The ``module:object.attribute`` names of ``needed`` that this pynetdicom lacks.

    Parameters
    ----------
    needed : tuple
        Pairs of ``"module"`` or ``"module:object"`` and the attribute names looked up on it.

    Returns
    -------
    list of str
        Each missing name (an unimportable module or missing object counts once).
    """
    missing: list[str] = []
    for where, attrs in needed:
        module_name, _, obj_name = where.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            if obj_name:
                obj = getattr(obj, obj_name)
        except (ImportError, AttributeError):
            missing.append(where)
            continue
        missing.extend(f"{where}.{a}" if obj_name else f"{where}:{a}" for a in attrs if not hasattr(obj, a))
    return missing


def _verdict() -> str | None:
    import pynetdicom

    version = str(getattr(pynetdicom, "__version__", "?"))
    try:
        major_minor = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        major_minor = ()
    if major_minor != WRITTEN_FOR:
        return f"pynetdicom {version} is installed, the fast reactors were written for {WRITTEN_FOR[0]}.{WRITTEN_FOR[1]}.x"
    missing = missing_attributes(_NEEDED)
    if missing:
        return f"pynetdicom {version} lacks {', '.join(missing)}"
    return None


def unsupported() -> str | None:
    """Why the fast reactors cannot be installed in this process, or ``None`` when they can.

    Checked once per process (the installed release against :data:`WRITTEN_FOR`, then
    every module, class and attribute the patches need).
    """
    with _check_lock:
        if not _checked:
            _checked.append(_verdict())
        return _checked[0]


def _forget_check() -> None:
    """Check again on the next call and warn again (for tests that change pynetdicom)."""
    global _warned
    with _check_lock:
        _checked.clear()
        _warned = False


def _warn_once(reason: str) -> None:
    global _warned
    with _check_lock:
        if _warned:
            return
        _warned = True
    log.warning("fast DICOM reactors not installed, plain pynetdicom serves every association (slower, same "
                "results): %s", reason)


def _instance_gap(assoc: Any) -> list[str]:
    dul = getattr(assoc, "dul", None)
    dimse = getattr(assoc, "dimse", None)
    objects = {"assoc": assoc, "dul": dul, "dimse": dimse}
    return [f"{kind}.{a}" for kind, attrs in _NEEDED_ON_INSTANCE.items() for a in attrs
            if not hasattr(objects[kind], a)]


def install(assoc: Any) -> bool:
    """Switch one not-yet-started association to the event-driven reactors, if this pynetdicom allows.

    All patches or none: when :func:`unsupported` gives a reason, or the association lacks
    an attribute the patches need, nothing is changed, a warning is logged (once per
    process) and plain pynetdicom serves the association. Install
    :mod:`dicom_node.fastdimse` only when this returns ``True``.

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        From an ``EVT_CONN_OPEN`` handler (the association's threads have not started).

    Returns
    -------
    bool
        Whether the patches were installed.
    """
    reason = unsupported()
    if reason is None:
        gap = _instance_gap(assoc)
        if gap:
            reason = f"a pynetdicom association lacks {', '.join(gap)}"
    if reason is not None:
        _warn_once(reason)
        return False
    # Everything that can fail comes before the first change to the association.
    from pynetdicom.pdu import A_ABORT_RQ
    from pynetdicom.utils import make_target

    wake_r, wake_w = socket.socketpair()
    _patch(assoc, wake_r, wake_w, A_ABORT_RQ, make_target)
    return True


def _patch(assoc: Any, wake_r: socket.socket, wake_w: socket.socket, abort_pdu_class: Any,
           make_target: Any) -> None:
    dul = assoc.dul
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    dul._mrinode_wake_r, dul._mrinode_wake_w = wake_r, wake_w
    dul._abort_pdu_class = abort_pdu_class

    provider_q = dul.to_provider_queue
    provider_put = provider_q.put

    def put_and_wake(item: Any, block: bool = True, timeout: float | None = None) -> None:
        provider_put(item, block, timeout)
        if threading.current_thread() is not dul:
            _wake(wake_w)

    provider_q.put = put_and_wake

    user_q = dul.to_user_queue
    user_put = user_q.put
    dimse_q = assoc.dimse.msg_queue

    def user_put_and_wake(item: Any, block: bool = True, timeout: float | None = None) -> None:
        user_put(item, block, timeout)
        dimse_q.put((None, None))

    user_q.put = user_put_and_wake

    dimse_put = dimse_q.put

    def put_or_serve(item: Any, block: bool = True, timeout: float | None = None) -> None:
        context_id, msg = item
        # Only requests on an accepted context are served inline: pynetdicom answers the
        # others by aborting, which must happen in the association thread (an abort from
        # the DUL thread would wait for the DUL thread itself). And only once the
        # association thread has marked the association established: the A-ASSOCIATE-AC
        # leaves before it does, a fast peer's first request can arrive in between, and
        # pynetdicom's service classes drop the response of a request served while
        # ``is_established`` is still false (the C-ECHO that was never answered, about
        # one association in thirty on a busy machine). Such a request is queued for the
        # association thread, which serves it once established.
        if (
            msg is not None
            and type(msg).__name__ in _SERVED_INLINE
            and threading.current_thread() is dul
            and assoc.is_established
            and context_id in assoc._accepted_cx
            and not assoc._sent_release
        ):
            assoc._serve_request(msg, context_id)
            return
        dimse_put(item, block, timeout)

    dimse_q.put = put_or_serve
    # pynetdicom's standard log handlers are unbound by dicom_node.netguard.install, on both reactors.

    dimse = assoc.dimse
    dimse._mrinode_send_msg = dimse.send_msg
    dimse.send_msg = types.MethodType(_fast_send_msg, dimse)
    dul.run_reactor = types.MethodType(_dul_reactor, dul)
    # ``Thread.__init__`` captured the original bound ``run_reactor`` as the thread's
    # target; point the not-yet-started thread at the replacement.
    if not dul.is_alive():
        dul._target = make_target(dul.run_reactor)
    assoc._run_reactor = types.MethodType(_assoc_reactor, assoc)
