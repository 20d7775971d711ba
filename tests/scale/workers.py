"""Start real ``mrinode worker`` processes for tests and the bench, each in its own folder."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.node import to_toml

__all__ = ["WorkerProcess", "scale_section"]


def scale_section(broker_url: str, **more: Any) -> dict[str, Any]:
    """``[scale]`` for a node or a worker of the tests (short backoff, long consumer timeout)."""
    return {"engine": "celery", "broker_url": broker_url, "consumer_timeout_s": 3600.0, "max_attempts": 3,
            "backoff_initial_s": 1.0, "backoff_max_s": 5.0, **more}


class WorkerProcess:
    """A real ``mrinode worker`` with its own working directory, configuration and log.

    Parameters
    ----------
    workdir : Path
        Its folder (nothing shared with the node but the network).
    name : str
        The worker's name (``--name``), as the node records it.
    broker_url : str
        The broker.
    node_url, token : str
        The node's API and token.
    pipelines : list of dict
        ``[[pipelines]]`` (warmed up at start).
    device : str
        ``--device``.
    """

    def __init__(self, workdir: Path, name: str, *, broker_url: str, node_url: str, token: str,
                 pipelines: list[dict[str, Any]], device: str = "cpu", concurrency: int = 1,
                 scale: dict[str, Any] | None = None, workers: dict[str, Any] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.device = device
        self.concurrency = concurrency
        cfg = {
            "workers": {"timeout_s": 300.0, **(workers or {})},
            "scale": {**scale_section(broker_url, node_url=node_url, node_token=token, work_dir="scratch"),
                      **(scale or {})},
            "pipelines": pipelines,
        }
        self.config_path = self.workdir / "worker.toml"
        self.config_path.write_text(to_toml(cfg))
        self.log_path = self.workdir / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start it (it connects to the broker and warms up in the background)."""
        env = dict(os.environ, TCP_NODELAY="1", PYTHONUNBUFFERED="1")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dicom_node", "--log-level", "INFO", "worker", "--config",
                 str(self.config_path), "--name", self.name, "--device", self.device,
                 "--concurrency", str(self.concurrency)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir, start_new_session=True)
        finally:
            log.close()
        return self

    def kill9(self) -> None:
        """SIGKILL the worker (and its warm children: its process group)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Celery's warm shutdown), SIGKILL after ``timeout``."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        self.kill9()

    def log_tail(self, n: int = 40) -> str:
        """The last lines of its log."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
