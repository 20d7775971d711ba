"""Helpers for the plugin's end-to-end tests: a real dcmtk ``storescp`` standing in for the
node's DICOM side, a recording HTTP server standing in for the node's REST API, dcmtk
``storescu`` as the scanner, and polling.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.orthanc import free_port

__all__ = [
    "PLUGIN_SCRIPT",
    "RecordingNodeApi",
    "StoreScp",
    "ct_series",
    "storescu",
    "synthetic_study",
    "wait_for",
]

PLUGIN_SCRIPT = Path(__file__).resolve().parents[2] / "plugin" / "mrinode_plugin.py"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def storescu(port: int, files: list[Path], *, calling: str = "STORESCU", called: str = "ORTHANC") -> None:
    """Send files with dcmtk ``storescu`` over one association (raises on failure)."""
    exe = shutil.which("storescu")
    if exe is None:
        raise RuntimeError("dcmtk storescu is not installed; run `make setup`.")
    cmd = [exe, "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"storescu failed ({proc.returncode}): {proc.stderr[-2000:]}")


class StoreScp:
    """A real dcmtk ``storescp`` on a free loopback port, writing into ``out_dir``."""

    def __init__(self, out_dir: Path, aet: str = "MRINODE") -> None:
        self.out_dir = Path(out_dir)
        self.aet = aet
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StoreScp:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        exe = shutil.which("storescp")
        if exe is None:
            raise RuntimeError("dcmtk storescp is not installed; run `make setup`.")
        self.proc = subprocess.Popen(
            [exe, "-aet", self.aet, "-od", str(self.out_dir), "-uf", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(),
        )
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)

    def files(self) -> list[Path]:
        """Files received so far."""
        return sorted(p for p in self.out_dir.iterdir() if p.is_file())


class RecordingNodeApi:
    """A stdlib HTTP server that records every call, as the node's REST API would see it.

    ``POST /studies/{uid}/complete`` answers 200 with the token check done for real;
    ``GET /jobs?study=UID`` answers the calls recorded for that study.
    """

    def __init__(self, token: str = "secret-token") -> None:
        self.token = token
        self.calls: list[dict[str, Any]] = []
        self.port = free_port()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                call = {"method": self.command, "path": self.path, "auth": self.headers.get("Authorization")}
                outer.calls.append(call)
                if call["auth"] != f"Bearer {outer.token}":
                    self._reply(401, {"detail": "bad token"})
                elif self.command == "GET" and self.path.startswith("/jobs"):
                    self._reply(200, [{"id": 1, "state": "done", "recorded": len(outer.calls)}])
                else:
                    self._reply(200, {"ok": True})

            do_GET = _handle  # noqa: N815 - the names http.server looks up
            do_POST = _handle  # noqa: N815

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def completes(self) -> list[str]:
        """Paths of the completion calls received."""
        return [c["path"] for c in self.calls if c["method"] == "POST" and c["path"].endswith("/complete")]

    def __enter__(self) -> RecordingNodeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def synthetic_study(base: Path, *, seed: int = 11, sequences: str = "T1,T1C,T2,FLAIR") -> Path:
    """A synthetic study with a tumour (``mrinode synth --dicom``), made once per folder.

    Returns
    -------
    Path
        The subject's ``dicom`` folder (one sub-folder per series).
    """
    from dicom_node.demo.scenario import synth_study

    out = base / f"synth-seed{seed}-{sequences.replace(',', '-')}"
    marker = out / ".complete"
    if marker.exists():
        return Path(marker.read_text())
    folder = synth_study(out, seed=seed, sequences=sequences)
    marker.write_text(str(folder))
    return folder


def ct_series(out: Path, n: int) -> tuple[str, list[Path]]:
    """Write a small CT series (a study no MR rule should route)."""
    from pydicom.uid import CTImageStorage, generate_uid

    from tests.support.mrfiles import make_mr_dataset

    study_uid, series_uid, paths = generate_uid(), generate_uid(), []
    out.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        ds = make_mr_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=i, series_description="CT HEAD")
        ds.Modality = "CT"
        ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        path = out / f"CT{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study_uid, paths
