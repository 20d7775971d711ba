"""One warm worker process as the supervisor sees it: start, send a job, wait for its answer, kill.

The child is a fresh interpreter (``python -m dicom_node.workers.child --serve``), so it
inherits none of the node's sockets or threads; it runs in its own session so that a
terminal's Ctrl-C reaches the node only, and a kill takes its whole process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer", "WarmProcess", "device_env", "memory_mb"]


def memory_mb(pid: int, key: str = "VmRSS") -> float:
    """A memory figure of a process from ``/proc/PID/status`` in MiB (``VmRSS``, ``VmHWM``); 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def device_env(device: str) -> tuple[str, dict[str, str]]:
    """The job spec's device and the environment for a worker on a configured device.

    Parameters
    ----------
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns
    -------
    tuple of (str, dict)
        The device the pipelines are given (``"cuda"`` for ``"cuda:N"``) and the variables
        to set (``CUDA_VISIBLE_DEVICES=N`` pins the process to that GPU; ``cpu`` hides them).

    Raises
    ------
    ValueError
        On any other name.
    """
    if device in ("auto", "cuda"):
        return device, {}
    if device == "cpu":
        return "cpu", {"CUDA_VISIBLE_DEVICES": ""}
    head, _, index = device.partition(":")
    if head == "cuda" and index.isdigit():
        return "cuda", {"CUDA_VISIBLE_DEVICES": index}
    raise ValueError(f"{device!r} is not a device: use cpu, auto, cuda or cuda:N")


@dataclass
class Answer:
    """How a job sent to a worker ended.

    Attributes
    ----------
    how : str
        ``"done"`` (the child answered), ``"crash"`` (it exited or was killed), ``"timeout"``
        or ``"stopped"`` (the node is shutting down).
    message : dict
        The child's answer when ``how == "done"``.
    """

    how: str
    message: dict[str, Any] = field(default_factory=dict)


class WarmProcess:
    """A long-lived worker child.

    Parameters
    ----------
    device : str
        The configured device (``"cpu"``, ``"cuda:1"``, …).
    pipelines : sequence of dict
        ``{"function", "options"}`` of the pipelines the child warms up at start.
    model_cache_mb : float
        Memory the child's warm models may hold (``[workers] model_cache_mb``; 0: no limit).
    """

    def __init__(self, device: str, pipelines: Sequence[dict[str, Any]] = (), model_cache_mb: float = 0) -> None:
        self.device = device
        self.model_cache_mb = model_cache_mb
        self.job_device, self._env = device_env(device)
        self.pipelines = [dict(p) for p in pipelines]
        self.proc: subprocess.Popen[bytes] | None = None
        self.jobs = 0
        self.started_at = 0.0
        self._buf = b""
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before the start)."""
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        """Whether the child is running."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the child (it prepares in the background; the first job waits for it)."""
        env = dict(os.environ, **self._env)
        env.setdefault("TCP_NODELAY", "1")
        cmd = [sys.executable, "-m", "dicom_node.workers.child", "--serve", "--device", self.job_device,
               "--pipelines", json.dumps(self.pipelines), "--model-cache-mb", f"{self.model_cache_mb:g}"]
        with self._lock:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                         start_new_session=True, close_fds=True)
        self.jobs = 0
        self.started_at = time.monotonic()
        self._buf = b""

    def send(self, spec: dict[str, Any]) -> bool:
        """Send one job spec; ``False`` if the child is gone."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(spec).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def wait_answer(self, job_id: int, timeout_s: float, stop: threading.Event) -> Answer:
        """Wait for the child's answer to job ``job_id``.

        Parameters
        ----------
        job_id : int
            The job sent.
        timeout_s : float
            Give up (``"timeout"``) after this long.
        stop : threading.Event
            Give up (``"stopped"``) when set.

        Returns
        -------
        Answer
            The outcome; the child is left as it is (the caller kills it where needed).
        """
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if isinstance(message, dict) and message.get("job_id") == job_id:
                        return Answer("done", message)
            if stop.is_set():
                return Answer("stopped")
            left = deadline - time.monotonic()
            if left <= 0:
                return Answer("timeout")
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return Answer("crash")
                self._buf += chunk

    def how_it_ended(self, wait_s: float = 5.0) -> str:
        """``"exit code N"`` or ``"signal N"`` of a child that is ending (killed if it has not within ``wait_s``)."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.proc.wait()
        return f"exit code {rc}" if rc >= 0 else f"signal {-rc}"

    def kill(self) -> None:
        """Kill the child and its process group at once, and reap it."""
        with self._lock:
            proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait()
        self._close_pipes(proc)

    def close(self, grace_s: float = 5.0) -> None:
        """End the child between jobs: end of its stdin, then a kill after ``grace_s``."""
        with self._lock:
            proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes(proc)

    @staticmethod
    def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
