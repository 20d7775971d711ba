"""A real RabbitMQ (Debian ``rabbitmq-server``) for tests and the bench, on loopback, in its own folder.

Usage::

    with RabbitBroker(tmp_path / "rabbit") as broker:
        broker.url          # amqp://guest:guest@127.0.0.1:PORT//
        broker.stop(); broker.start()   # same port, same data: durable queues and messages survive

It runs ``/usr/lib/rabbitmq/bin/rabbitmq-server`` as a child (not Debian's service, not the
``/usr/sbin`` wrapper that switches to the ``rabbitmq`` user) with its own Mnesia and log
folders, configuration (``listeners.tcp.1 = 127.0.0.1:PORT``, ``consumer_timeout`` above the
longest job, no plugins), a private node name, Erlang cookie, ``HOME`` and EPMD port. Boot
takes ~7 s on 2 busy cores, so a test module shares one broker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.orthanc import free_port

__all__ = ["RABBITMQ_SERVER", "RabbitBroker"]

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


class RabbitBroker:
    """One private RabbitMQ node.

    Parameters
    ----------
    workdir : Path
        Its folder (data, logs, config, home).
    consumer_timeout_ms : int
        RabbitMQ's ``consumer_timeout``: above the longest job of the test.
    """

    def __init__(self, workdir: Path, consumer_timeout_ms: int = 3_600_000) -> None:
        self.workdir = Path(workdir)
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.consumer_timeout_ms = consumer_timeout_ms
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "rabbitmq.log"
        self.boot_s = 0.0

    @property
    def url(self) -> str:
        """The AMQP URL (the default ``guest`` user, allowed from loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        d = self.workdir
        for sub in ("home", "mnesia", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        cookie = d / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(16).hex())
            cookie.chmod(0o600)
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            f"consumer_timeout = {self.consumer_timeout_ms}\n"
            "log.console = true\nlog.file = false\n")
        (d / "enabled_plugins").write_text("[].\n")
        return {
            **os.environ,
            "HOME": str(d / "home"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_NODENAME": f"mrinode-test-{self.port}@localhost",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_CRASH_DUMP_SECONDS": "0",
        }

    def start(self, timeout: float = 120.0) -> RabbitBroker:
        """Start the node and wait until it takes an AMQP connection.

        Raises
        ------
        RuntimeError
            If it exits or does not answer in time (with its log's tail).
        """
        if not Path(RABBITMQ_SERVER).exists():
            raise RuntimeError(f"{RABBITMQ_SERVER} is not installed (Debian package rabbitmq-server); run `make setup`.")
        env = self._env()
        t0 = time.monotonic()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen([RABBITMQ_SERVER], stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.workdir, start_new_session=True)
        finally:
            log.close()
        from kombu import Connection

        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(Exception), Connection(self.url, connect_timeout=1.0) as c:
                c.ensure_connection(max_retries=1)
                self.boot_s = time.monotonic() - t0
                return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"rabbitmq-server did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the node (SIGTERM, its data kept); SIGKILL after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _end_epmd(self) -> None:
        """End the EPMD daemon this node started (it leaves the process group; found by its HOME)."""
        home = f"HOME={self.workdir / 'home'}".encode()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if b"epmd" in (d / "cmdline").read_bytes() and home in (d / "environ").read_bytes().split(b"\0"):
                    os.kill(int(d.name), signal.SIGKILL)

    def close(self) -> None:
        """Stop the node and its EPMD (the end of a test module)."""
        self.stop()
        self._end_epmd()

    def kill(self) -> None:
        """SIGKILL the node's process group."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log_tail(self, n: int = 40) -> str:
        """The last lines of its log."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def __enter__(self) -> RabbitBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
