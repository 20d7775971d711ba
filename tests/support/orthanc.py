"""Start a real Orthanc (``/usr/sbin/Orthanc cfg.json``) on free loopback ports for tests.

Usage::

    with OrthancServer(tmp_path, modalities={"MRINODE": ("MRINODE", "127.0.0.1", 11112)}) as orthanc:
        orthanc.get("/system")
        orthanc.post("/modalities/MRINODE/store", json=[study_id])

or, in a test with an ``ExitStack`` fixture, ``stack.enter_context(OrthancServer(...))``.
The ``orthanc_factory`` fixture below can be made available to a test folder by
importing it in that folder's ``conftest.py``::

    from tests.support.orthanc import orthanc_factory  # noqa: F401

Everything that talks to its REST API goes through ``orthanc-api-client``
(:class:`orthanc_api_client.OrthancApiClient`, environment proxies ignored).

The server always runs with a temporary storage directory, HTTP basic authentication
(``user`` / ``password``), ``TCP_NODELAY=1`` in its environment, its log written to
``<workdir>/orthanc.log`` (kept for debugging; the tail is included in start-up errors),
and it is always killed on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from orthanc_api_client import OrthancApiClient, OrthancApiException

__all__ = [
    "DICOMWEB_PLUGIN",
    "ORTHANC_EXE",
    "PYTHON_PLUGIN",
    "OrthancClient",
    "OrthancServer",
    "free_port",
    "orthanc_factory",
]

ORTHANC_EXE = "/usr/sbin/Orthanc"
PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = PLUGIN_DIR / "libOrthancDicomWeb.so"
PYTHON_PLUGIN = PLUGIN_DIR / "libOrthancPython.so"


class OrthancClient(OrthancApiClient):
    """:class:`orthanc_api_client.OrthancApiClient` that ignores environment proxies and is a context manager."""

    def __init__(self, url: str, user: str | None = None, pwd: str | None = None) -> None:
        super().__init__(url, user=user, pwd=pwd)
        self._http_session.trust_env = False

    def __enter__(self) -> OrthancClient:
        return self


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OrthancServer:
    """A real Orthanc process with its own storage, ports and log.

    Parameters
    ----------
    workdir : Path
        A temporary folder; Orthanc's storage, config and log go under it.
    aet : str
        Orthanc's own AE title.
    modalities : dict, optional
        ``{name: (ae_title, host, port)}`` for ``DicomModalities``.
    plugins : list of Path, optional
        Plugin ``.so`` files to load (e.g. :data:`DICOMWEB_PLUGIN`, :data:`PYTHON_PLUGIN`).
    python_script : Path, optional
        The script for the Python plugin (``"PythonScript"`` key); adds the Python
        plugin to ``plugins`` if missing.
    extra_config : dict, optional
        More top-level configuration keys (merged last, they win).
    http_port, dicom_port : int, optional
        Fixed ports (default: free ones). Fix them to restart Orthanc on the same ports.
    user, password : str
        The registered HTTP user.
    env : dict, optional
        Extra environment variables for the Orthanc process.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, str, int]] | None = None,
        plugins: list[Path] | None = None,
        python_script: Path | None = None,
        extra_config: dict[str, Any] | None = None,
        http_port: int | None = None,
        dicom_port: int | None = None,
        user: str = "orthanc",
        password: str = "orthanc-test",
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.plugins = list(plugins or [])
        if python_script is not None and PYTHON_PLUGIN not in self.plugins:
            self.plugins.append(PYTHON_PLUGIN)
        self.python_script = python_script
        self.extra_config = dict(extra_config or {})
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        self.user = user
        self.password = password
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.storage_dir = self.workdir / "storage"
        self.config_path = self.workdir / "orthanc.json"
        self.log_path = self.workdir / "orthanc.log"
        self._log_handle: Any = None
        self._api: OrthancClient | None = None

    # ------------------------------------------------------------------ config
    @property
    def url(self) -> str:
        """The base URL of the REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def auth(self) -> tuple[str, str]:
        """``(user, password)`` for HTTP basic authentication."""
        return (self.user, self.password)

    def config(self) -> dict[str, Any]:
        """Return the configuration dictionary written to ``orthanc.json``."""
        cfg: dict[str, Any] = {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.storage_dir),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "DicomModalities": {name: list(v) for name, v in self.modalities.items()},
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "UnknownSopClassAccepted": True,
            "HttpTimeout": 60,
            "StableAge": 2,
            "ConcurrentJobs": 2,
            "HttpThreadsCount": 8,
            "Plugins": [str(p) for p in self.plugins],
            "DicomScuTimeout": 10,
        }
        if DICOMWEB_PLUGIN in self.plugins:
            cfg["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True}
        if self.python_script is not None:
            cfg["PythonScript"] = str(self.python_script)
            cfg["PythonVerbose"] = False
        cfg.update(self.extra_config)
        return cfg

    # --------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 30.0) -> OrthancServer:
        """Write the config, start Orthanc and wait until its REST API answers.

        Raises
        ------
        RuntimeError
            If Orthanc is not installed, exits, or does not answer within ``timeout``
            seconds; the message carries the tail of its log.
        """
        if not Path(ORTHANC_EXE).exists():
            raise RuntimeError(f"{ORTHANC_EXE} is not installed (Debian package orthanc); run `make setup`.")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        env = dict(os.environ)
        env["TCP_NODELAY"] = "1"
        env.update(self.env)
        self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [ORTHANC_EXE, str(self.config_path)],
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.api.is_alive(timeout=2) and self._dicom_port_open():
                    return self
            except OrthancApiException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    def _dicom_port_open(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1.0):
            return True
        return False

    def stop(self, timeout: float = 15.0) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL); safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._api is not None:
            self._api.close()
            self._api = None

    def restart(self, timeout: float = 30.0) -> OrthancServer:
        """Stop and start again on the same ports and storage."""
        self.stop()
        return self.start(timeout=timeout)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        """The last ``n`` lines of Orthanc's log."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------------- REST
    @property
    def api(self) -> OrthancClient:
        """The REST client (``orthanc-api-client``) bound to this server with credentials."""
        if self._api is None:
            self._api = OrthancClient(self.url, user=self.user, pwd=self.password)
        return self._api

    def client(self) -> OrthancClient:
        """A new REST client (``orthanc-api-client``; ``with orthanc.client() as c: c.get(path).content``)."""
        return OrthancClient(self.url, user=self.user, pwd=self.password)

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` and return the decoded JSON (raises on HTTP errors)."""
        return self.api.get_json(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        """POST to ``path`` and return the decoded JSON, or the text if not JSON.

        ``content=`` (bytes or text) is sent as the body, as ``data=`` is.
        """
        if "content" in kwargs:
            kwargs["data"] = kwargs.pop("content")
        r = self.api.post(path, **kwargs)
        try:
            return r.json()
        except ValueError:
            return r.text

    def upload(self, path: Path) -> Any:
        """Upload one DICOM file (``POST /instances``); the new instance ids."""
        return self.api.upload_file(str(path))

    def instance_file(self, instance_id: str) -> bytes:
        """The DICOM file of one instance."""
        data: bytes = self.api.instances.get_file(instance_id)
        return data

    def studies(self) -> list[str]:
        """Orthanc's study identifiers."""
        result: list[str] = self.api.studies.get_all_ids()
        return result

    def find_study(self, study_uid: str) -> str | None:
        """Orthanc's identifier of the study with this Study Instance UID, if stored."""
        found = self.api.lookup(study_uid, filter="Study")
        return str(found[0]) if found else None

    def study_modalities(self, study_uid: str) -> list[str]:
        """The Modality of every series Orthanc holds for this study."""
        sid = self.find_study(study_uid)
        if sid is None:
            return []
        series = self.get(f"/studies/{sid}/series")
        return [s["MainDicomTags"].get("Modality", "") for s in series]


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Any]:
    """A factory starting real Orthanc servers; all are killed at the end of the test.

    Call it with the keyword arguments of :class:`OrthancServer` (``workdir`` defaults
    to a fresh folder under ``tmp_path``).
    """
    servers: list[OrthancServer] = []

    def make(**kwargs: Any) -> OrthancServer:
        workdir = kwargs.pop("workdir", tmp_path / f"orthanc{len(servers)}")
        server = OrthancServer(workdir, **kwargs)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
