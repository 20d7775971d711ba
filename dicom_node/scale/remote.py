"""A worker's calls to the node: fetch a study (WADO-RS or a shared folder), report, upload results."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

__all__ = ["NodeClient", "NodeUnreachableError", "shared_paths"]

log = logging.getLogger("dicom_node.scale")

T = TypeVar("T")

#: Tries of one call while the node does not answer (its restart), 1, 2, 4, … s apart.
_TRIES = 6


class NodeUnreachableError(RuntimeError):
    """The node did not answer (or answered an error) after the retries."""


class NodeClient:
    """The node's API as a worker uses it.

    Parameters
    ----------
    url : str
        The node's REST API (``scale.node_url``).
    token : str
        Its bearer token.
    timeout_s : float
        Seconds one HTTP call may take.
    """

    def __init__(self, url: str, token: str, timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=timeout_s)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        delay = 1.0
        for attempt in range(1, _TRIES + 1):
            try:
                return call()
            except (httpx.TransportError, OSError) as exc:
                if attempt == _TRIES:
                    raise NodeUnreachableError(f"{what}: the node at {self.url} did not answer ({exc})") from exc
                log.warning("%s: the node did not answer (%s); trying again in %.0f s", what, type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 16.0)
        raise AssertionError("unreachable")

    def _post(self, path: str, body: dict[str, Any], ok: tuple[int, ...] = (200,)) -> tuple[int, dict[str, Any]]:
        r = self._retry(f"POST {path.split('/')[-1]}", lambda: self.http.post(path, json=body))
        if r.status_code not in ok:
            raise NodeUnreachableError(f"the node answered {r.status_code} to {path.split('/')[-1]}: {r.text[:300]}")
        return r.status_code, dict(r.json())

    def start(self, task_id: str, worker: str) -> tuple[int, dict[str, Any]]:
        """Say a task starts; returns the status (200 run, 409 drop, 410 dead-letter) and the answer."""
        return self._post(f"/scale/tasks/{task_id}/start", {"worker": worker}, ok=(200, 409, 410))

    def failed(self, task_id: str, error: str, final: bool, restarts: dict[str, int] | None = None) -> None:
        """Report a failed run (``final``: the job's attempts are spent; ``restarts``: of warm processes, by reason)."""
        self._post(f"/scale/tasks/{task_id}/failed", {"error": error, "final": final, "restarts": restarts or {}},
                   ok=(200, 409))

    def upload(self, task_id: str, delivery: int, out_dir: Path, outputs: list[str]) -> bool:
        """Upload each result file (paths relative to ``out_dir``); ``False`` when the node no longer wants them."""
        for rel in outputs:
            data = (out_dir / rel).read_bytes()
            path = f"/scale/tasks/{task_id}/{delivery}/files/{rel}"
            r = self._retry("upload", lambda p=path, d=data: self.http.put(  # type: ignore[misc]
                p, content=d, headers={"Content-Type": "application/octet-stream"}))
            if r.status_code == 409:  # the job was sent again or processed meanwhile (a node restart)
                return False
            if r.status_code != 200:
                raise NodeUnreachableError(f"the node answered {r.status_code} to a result upload: {r.text[:300]}")
        return True

    def result(self, task_id: str, delivery: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Send the run's result; 200 accepted, 409 no longer wanted (another run's result came first)."""
        return self._post(f"/scale/tasks/{task_id}/{delivery}/result", body, ok=(200, 409))

    def fetch_study(self, study_uid: str, dest: Path) -> list[Path]:
        """Fetch a study's instances over DICOMweb WADO-RS (``dicomweb-client``) into ``dest``.

        Returns
        -------
        list of Path
            One file per instance, in the order the node sent them.
        """
        from dicomweb_client import DICOMwebClient

        dest.mkdir(parents=True, exist_ok=True)

        def fetch() -> list[Path]:
            client = DICOMwebClient(url=f"{self.url}/dicom-web", headers={"Authorization": f"Bearer {self.token}"},
                                    timeout=self.timeout_s)
            paths = []
            for i, ds in enumerate(client.iter_study(study_uid)):
                p = dest / f"{i:06d}.dcm"
                ds.save_as(p, enforce_file_format=True)
                paths.append(p)
            return paths

        import requests

        def guarded() -> list[Path]:
            try:
                return fetch()
            except requests.ConnectionError as exc:
                raise OSError(str(exc)) from exc

        return self._retry("WADO-RS retrieve", guarded)


def shared_paths(spool: Path, instances: list[str]) -> list[Path]:
    """The instances' paths under a shared spool folder (``data_access = "shared"``).

    Raises
    ------
    FileNotFoundError
        When one is missing there (a mount that is not the node's spool).
    """
    paths = []
    for rel in instances:
        p = Path(rel) if Path(rel).is_absolute() else spool / rel
        if not p.is_file():
            raise FileNotFoundError(f"an instance of the study is not under scale.shared_spool_dir ({spool})")
        paths.append(p)
    return paths
