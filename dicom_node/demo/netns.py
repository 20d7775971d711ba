"""The demo's private network namespace and a loopback forwarder into it.

Orthanc 1.10 has no bind-address option: its HTTP and DICOM servers listen on every
interface. So that ``make demo`` never opens a port beyond this machine, the demo runs
Orthanc and the node in a named network namespace with only a loopback interface
(``ip netns add mrinode-demo``). A small forwarder listening on this machine's
127.0.0.1 (never another address) carries connections into it, so a person can open
Orthanc Explorer at http://127.0.0.1:8042 as usual.

Entering a namespace uses ``setns(2)`` through ``ctypes`` (Python 3.11 has no
``os.setns``). It affects the calling thread only; sockets keep the namespace they were
created in, which is what the forwarder relies on.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import selectors
import shutil
import socket
import subprocess
from pathlib import Path

__all__ = ["CLONE_NEWNET", "DemoNetnsError", "create_netns", "delete_netns", "enter_netns", "forward", "netns_exists"]

CLONE_NEWNET = 0x40000000
_NETNS_DIR = Path("/run/netns")


class DemoNetnsError(RuntimeError):
    """The namespace cannot be made or entered (the message says why and what to do)."""


def _ip() -> str:
    exe = shutil.which("ip") or "/usr/sbin/ip"
    if not Path(exe).exists():
        raise DemoNetnsError("the `ip` command (Debian package iproute2) is missing; run `make setup`.")
    return exe


def netns_exists(name: str) -> bool:
    """Whether ``/run/netns/<name>`` exists."""
    return (_NETNS_DIR / name).exists()


def create_netns(name: str) -> None:
    """Create the namespace (if missing) and bring its loopback up.

    Raises
    ------
    DemoNetnsError
        If this process may not create namespaces (not root) or ``ip`` fails.
    """
    if os.geteuid() != 0:
        raise DemoNetnsError(
            "the demo runs Orthanc in its own network namespace (Orthanc 1.10 cannot listen on "
            "loopback only) and that needs root: run `sudo make demo`, or pass --no-netns to accept "
            "Orthanc listening on every interface."
        )
    ip = _ip()
    if not netns_exists(name):
        proc = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise DemoNetnsError(f"`ip netns add {name}` failed: {proc.stderr.strip()}")
    proc = subprocess.run([ip, "netns", "exec", name, ip, "link", "set", "lo", "up"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DemoNetnsError(f"cannot bring up loopback in namespace {name!r}: {proc.stderr.strip()}")


def delete_netns(name: str) -> None:
    """Delete the namespace if it exists (processes inside should be stopped first)."""
    if netns_exists(name):
        subprocess.run([_ip(), "netns", "del", name], capture_output=True, check=False)


def enter_netns(name: str) -> None:
    """Move the calling thread into the namespace (children it starts follow).

    Raises
    ------
    DemoNetnsError
        If the namespace is missing or ``setns`` fails.
    """
    path = _NETNS_DIR / name
    if not path.exists():
        raise DemoNetnsError(f"network namespace {name!r} does not exist (is the demo running?).")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise DemoNetnsError(f"setns into {name!r} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def forward(name: str, ports: list[int], ready_file: Path | None = None) -> None:
    """Forward 127.0.0.1:PORT of the current namespace to 127.0.0.1:PORT inside ``name``.

    Listening sockets are made first (here), then the thread enters the namespace, so every
    outgoing connection is made there. Runs until killed.

    Parameters
    ----------
    name : str
        The namespace.
    ports : list of int
        The ports to forward; one that is already taken here is skipped with a message.
    ready_file : Path, optional
        Written (with the forwarded ports) once listening, for the demo driver.
    """
    listeners: list[socket.socket] = []
    for port in ports:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind(("127.0.0.1", port))
        except OSError as exc:
            print(f"forwarder: 127.0.0.1:{port} is taken here ({exc.strerror}); not forwarded.", flush=True)
            srv.close()
            continue
        srv.listen(64)
        srv.setblocking(False)
        listeners.append(srv)
    enter_netns(name)
    if ready_file is not None:
        ready_file.write_text(" ".join(str(s.getsockname()[1]) for s in listeners))
    sel = selectors.DefaultSelector()
    for srv in listeners:
        sel.register(srv, selectors.EVENT_READ, ("accept", srv.getsockname()[1]))
    peers: dict[socket.socket, socket.socket] = {}

    def close(sock: socket.socket) -> None:
        other = peers.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(s)
            s.close()
            peers.pop(s, None)

    while True:
        for key, _ in sel.select():
            kind, data = key.data
            if kind == "accept":
                client, _addr = key.fileobj.accept()  # type: ignore[union-attr]
                try:
                    upstream = socket.create_connection(("127.0.0.1", data), timeout=5)
                except OSError:
                    client.close()
                    continue
                for s in (client, upstream):
                    s.setblocking(False)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peers[client], peers[upstream] = upstream, client
                sel.register(client, selectors.EVENT_READ, ("pipe", None))
                sel.register(upstream, selectors.EVENT_READ, ("pipe", None))
                continue
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if not chunk:
                close(sock)
                continue
            other = peers.get(sock)
            if other is None:
                close(sock)
                continue
            try:
                other.setblocking(True)
                other.sendall(chunk)
                other.setblocking(False)
            except OSError:
                close(sock)
