"""The viewer's ASGI app: OHIF's static files and Orthanc's DICOMweb on one origin.

Same origin means the browser needs no CORS at all, so none is sent. The proxy forwards
only reads (GET, HEAD) under the DICOMweb root, passes the browser's ``Authorization``
header through (Orthanc's own users and passwords stay in force; its ``WWW-Authenticate``
challenge comes back to the browser) and keeps the browser's ``Host``, so the URLs that
Orthanc writes into DICOMweb metadata point back at this origin.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from dicom_node.viewer.bundle import check_dist

__all__ = ["ViewerSettings", "create_app"]

#: Request headers passed to the PACS.
_FORWARD_REQUEST = ("accept", "accept-encoding", "authorization", "range", "if-none-match", "if-modified-since",
                    "host")
#: Response headers passed back to the browser.
_FORWARD_RESPONSE = ("content-type", "content-length", "content-encoding", "www-authenticate", "etag", "last-modified",
                     "content-range", "accept-ranges", "cache-control")

#: Transport errors after which a read is sent once more (the connection, not the PACS, failed).
_DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.ConnectError)
#: Seconds a pooled connection is kept: below CivetWeb's keep-alive, so few are found dropped.
_KEEPALIVE_EXPIRY_S = 0.4

log = logging.getLogger(__name__)

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")


@dataclass(frozen=True)
class ViewerSettings:
    """What the viewer app serves.

    Attributes
    ----------
    dist : Path
        OHIF's built ``dist/`` folder.
    app_config : Path
        The OHIF app configuration served as ``/app-config.js``.
    pacs_url : str
        The PACS's HTTP root, e.g. ``http://127.0.0.1:8042`` (Orthanc).
    dicomweb_root : str
        The DICOMweb path on both sides (Orthanc's ``DicomWeb.Root``).
    timeout_s : float
        Seconds to wait for the PACS.
    """

    dist: Path
    app_config: Path
    pacs_url: str
    dicomweb_root: str = "/dicom-web"
    timeout_s: float = 120.0


async def _send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send a read to the PACS, once more on a fresh connection if the pooled one was dropped.

    Orthanc (CivetWeb) closes a kept-alive connection after a second or less of idleness; a
    request written to it in that instant gets no answer (``RemoteProtocolError``) although
    the PACS is up. Only GET and HEAD pass this proxy, so sending the request again is safe.

    Parameters
    ----------
    client : httpx.AsyncClient
        The app's pooled client.
    request : httpx.Request
        The read to forward.

    Returns
    -------
    httpx.Response
        The PACS's reply, its body still streaming.
    """
    try:
        return await client.send(request, stream=True)
    except _DROPPED as exc:
        log.info("the PACS dropped a kept-alive connection (%s); sending the read again", type(exc).__name__)
        return await client.send(request, stream=True)


def _static_file(dist: Path, path: str) -> Path | None:
    """The file under ``dist`` that ``path`` names, or ``None`` (never outside ``dist``)."""
    if not path:
        return None
    candidate = (dist / path).resolve()
    if not candidate.is_relative_to(dist) or not candidate.is_file():
        return None
    return candidate


def create_app(settings: ViewerSettings) -> FastAPI:
    """Build the viewer app.

    Parameters
    ----------
    settings : ViewerSettings
        The viewer's files and the PACS to proxy.

    Returns
    -------
    fastapi.FastAPI

    Raises
    ------
    ViewerBundleError
        If ``settings.dist`` holds no built viewer.
    FileNotFoundError
        If the app configuration is missing.
    """
    dist = check_dist(settings.dist).resolve()
    if not settings.app_config.is_file():
        raise FileNotFoundError(f"The OHIF app configuration {settings.app_config} does not exist.")
    root = "/" + settings.dicomweb_root.strip("/")
    pacs = settings.pacs_url.rstrip("/")
    index = dist / "index.html"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(keepalive_expiry=_KEEPALIVE_EXPIRY_S)
        async with httpx.AsyncClient(timeout=settings.timeout_s, follow_redirects=False, limits=limits) as client:
            app.state.client = client
            yield

    app = FastAPI(title="mrinode viewer", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.api_route(root + "/{path:path}", methods=["GET", "HEAD"])
    async def dicomweb(path: str, request: Request) -> Response:
        client: httpx.AsyncClient = request.app.state.client
        headers = {"accept-encoding": "identity"}  # the body passes through as Orthanc encodes it
        headers.update((k.lower(), v) for k, v in request.headers.items() if k.lower() in _FORWARD_REQUEST)
        upstream = client.build_request(request.method, f"{pacs}{root}/{path}", params=request.query_params,
                                        headers=headers)
        try:
            reply = await _send(client, upstream)
        except httpx.HTTPError as exc:
            return Response(f"The PACS at {pacs} did not answer: {type(exc).__name__}.", status_code=502,
                            media_type="text/plain")
        out_headers = {k: v for k, v in reply.headers.items() if k.lower() in _FORWARD_RESPONSE}
        return StreamingResponse(reply.aiter_raw(), status_code=reply.status_code, headers=out_headers,
                                 background=BackgroundTask(reply.aclose))

    @app.get("/app-config.js")
    async def app_config() -> FileResponse:
        return FileResponse(settings.app_config, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/{path:path}")
    async def static(path: str) -> FileResponse:
        found = _static_file(dist, path)
        if found is None:  # a client-side route such as /viewer?StudyInstanceUIDs=...
            return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})
        return FileResponse(found)

    return app
