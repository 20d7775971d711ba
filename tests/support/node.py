"""Start ``mrinode serve`` as a real subprocess with a temporary configuration.

Usage::

    node = NodeProcess(tmp_path, pipelines=[TEST_PIPELINE])
    node.start()
    node.api("GET", "/jobs")
    node.stop()          # SIGTERM; node.kill9() for a crash

The node listens on free loopback ports, keeps its data under ``<workdir>/var`` and its
log in ``<workdir>/node.log``; it is always stopped by the ``node_factory`` fixture.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.orthanc import free_port

__all__ = ["TEST_PIPELINE", "NodeProcess", "node_factory", "to_toml"]

#: The test pipeline entry (a SEG of a threshold mask; not a model).
TEST_PIPELINE: dict[str, Any] = {
    "name": "test-threshold-seg",
    "function": "dicom_node.pipelines.testing:run",
    "enabled": True,
    "options": {"threshold_fraction": 0.5},
}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        s = str(v).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{s}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def to_toml(data: dict[str, Any]) -> str:
    """Write a configuration mapping as TOML (tables and arrays of tables; inline below)."""
    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        simple = {k: v for k, v in d.items() if not isinstance(v, dict) and not _is_aot(v)}
        for k, v in simple.items():
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in d.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                lines.append(f"\n[{name}]")
                table(name, v)
            elif _is_aot(v):
                for item in v:
                    lines.append(f"\n[[{name}]]")
                    table(name, item)

    table("", data)
    return "\n".join(lines) + "\n"


def _is_aot(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


class NodeProcess:
    """A real ``mrinode serve`` process.

    Parameters
    ----------
    workdir : Path
        Its folder (config, ``var/`` data, log).
    ae_title : str
        The node's AE title.
    allowed_callers : list of (ae_title, host)
        Admitted calling AEs (default: STORESCU, ECHOSCU, ORTHANC, TESTSCU from 127.0.0.1).
    destinations : list of dict
        ``[[destinations]]`` entries.
    pipelines : list of dict
        ``[[pipelines]]`` entries.
    extra : dict
        More sections/keys merged into the configuration (per section).
    token : str, optional
        The API bearer token (default ``"test-token"``).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ae_title: str = "MRINODE",
        allowed_callers: list[tuple[str, str | None]] | None = None,
        destinations: list[dict[str, Any]] | None = None,
        pipelines: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        token: str | None = "test-token",
        dicom_port: int | None = None,
        api_port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ae_title = ae_title
        self.dicom_port = dicom_port or free_port()
        self.api_port = api_port or free_port()
        self.token = token
        callers = allowed_callers or [("STORESCU", "127.0.0.1"), ("ECHOSCU", "127.0.0.1"),
                                      ("ORTHANC", "127.0.0.1"), ("TESTSCU", "127.0.0.1")]
        cfg: dict[str, Any] = {
            "node": {"data_dir": str(self.workdir / "var"), "ae_title": ae_title},
            "dicom": {"host": "127.0.0.1", "port": self.dicom_port,
                      "allowed_callers": [{"ae_title": a, **({"host": h} if h else {})} for a, h in callers]},
            "api": {"host": "127.0.0.1", "port": self.api_port, **({"token": token} if token else {})},
            "tracker": {"stable_after_s": 3600.0, "poll_interval_s": 0.2},
            "workers": {"count": 1, "max_attempts": 2, "timeout_s": 300.0, "device": "cpu"},
            "export": {"max_attempts": 4, "backoff_initial_s": 0.5, "backoff_max_s": 2.0, "timeout_s": 10.0},
        }
        for section, values in (extra or {}).items():
            if isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section] = {**cfg[section], **values}
            else:
                cfg[section] = values
        if destinations:
            cfg["destinations"] = destinations
        if pipelines:
            cfg["pipelines"] = pipelines
        self.config = cfg
        self.config_path = self.workdir / "node.toml"
        self.config_path.write_text(to_toml(cfg))
        self.log_path = self.workdir / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        """The node's data folder."""
        return self.workdir / "var"

    @property
    def url(self) -> str:
        """The REST API's base URL."""
        return f"http://127.0.0.1:{self.api_port}"

    def command(self) -> list[str]:
        """The command line that runs the node (subclasses may wrap it)."""
        return [sys.executable, "-m", "dicom_node", "--log-level", "INFO", "serve", "--config", str(self.config_path)]

    def start(self, timeout: float = 60.0) -> NodeProcess:
        """Start ``mrinode serve`` and wait until ``/health`` answers.

        Raises
        ------
        RuntimeError
            If it exits or does not answer in time; the message carries its log.
        """
        env = dict(os.environ, TCP_NODELAY="1", PYTHONUNBUFFERED="1")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mrinode serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.1)
        self.kill9()
        raise RuntimeError(f"mrinode serve did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill9(self) -> None:
        """SIGKILL the node and its worker children (its process group)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.kill9()

    def log_tail(self, n: int = 80) -> str:
        """The last ``n`` lines of the node's log."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def api(self, method: str, path: str, *, token: str | None = "default", **kwargs: Any) -> httpx.Response:
        """Call the REST API with the bearer token (``token=None`` sends none)."""
        tok = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return httpx.request(method, self.url + path, headers=headers, timeout=30.0, **kwargs)

    def wait_job(self, study_uid: str, states: tuple[str, ...] = ("done",), timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the newest job of a study is in one of ``states``; return it.

        Raises
        ------
        AssertionError
            On timeout, or if the job reaches ``failed`` while waiting for something else.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            r = self.api("GET", "/jobs", params={"study_uid": study_uid})
            r.raise_for_status()
            jobs = r.json()
            if jobs:
                last = jobs[0]
                if last["state"] in states:
                    return dict(last)
                if last["state"] == "failed" and "failed" not in states:
                    raise AssertionError(f"job failed: {last}\n{self.log_tail()}")
            time.sleep(0.2)
        raise AssertionError(f"job of study not in {states} within {timeout} s: {last}\n{self.log_tail()}")


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Any]:
    """A factory of started :class:`NodeProcess` es; all are stopped at the end of the test."""
    nodes: list[NodeProcess] = []

    def make(**kwargs: Any) -> NodeProcess:
        workdir = kwargs.pop("workdir", tmp_path / f"node{len(nodes)}")
        node = NodeProcess(workdir, **kwargs)
        nodes.append(node)
        return node.start()

    try:
        yield make
    finally:
        for node in nodes:
            if node.proc is not None:
                node.kill9()
