"""The REST API (FastAPI): health, studies, jobs, retry, complete, Prometheus metrics.

Every request except ``GET /health`` needs ``Authorization: Bearer <token>`` when
``api.token`` (or ``api.token_file``) is set: the schema (``GET /openapi.json``), unknown
paths and wrong methods included (a gate in front of the routes answers 401 before any
routing). There are no docs pages. Every input is validated (job IDs and limits within
what SQLite can hold, job states by name, bounded UIDs): a bad one is answered 404 or
422, never 5xx; a database that is busy or on a full disk answers 503. Responses carry
full UIDs (the caller is an operator or the PACS plugin); log lines do not.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from dicom_node.queue import JOB_STATES
from dicom_node.scale.router import scale_router

if TYPE_CHECKING:
    from dicom_node.service import NodeService

__all__ = ["MAX_DB_INTEGER", "MAX_LIMIT", "MAX_UID_CHARS", "create_app"]

log = logging.getLogger(__name__)

#: The largest integer SQLite stores (a job ID above it cannot exist).
MAX_DB_INTEGER = 2**63 - 1
#: The most rows one list request returns.
MAX_LIMIT = 10_000
#: The longest UID a request may name (the standard's limit is 64; sloppy senders exceed it).
MAX_UID_CHARS = 1024

JobId = Annotated[int, Path(ge=1, le=MAX_DB_INTEGER, description="a job ID")]
StudyUid = Annotated[str, Path(min_length=1, max_length=MAX_UID_CHARS, description="a Study Instance UID")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="the most rows to return")]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _token_ok(given: bytes, token: bytes) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>`` (constant time)."""
    scheme, _, value = given.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), token)


class BearerGate:
    """ASGI middleware: every HTTP request but ``GET /health`` needs the token.

    It stands in front of routing, so unknown paths, wrong methods and the schema are
    refused (401) like every route, and nothing about the API is told to a caller
    without the token.

    Parameters
    ----------
    app : ASGI application
        The application behind the gate.
    token : str
        The bearer token.
    """

    def __init__(self, app: ASGIApp, token: str, console: bool = False) -> None:
        self.app = app
        self.token = token.encode()
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 401 (a WebSocket is closed with 1008).

        The console (``/console/…``) signs its operators in with the same token and checks
        its own session cookie on every page (:mod:`dicom_node.console`).
        """
        if scope["type"] not in ("http", "websocket") or (
                scope["type"] == "http" and scope["path"] == "/health" and scope["method"] == "GET") or (
                scope["type"] == "http" and self.console and (scope["path"] + "/").startswith("/console/")):
            await self.app(scope, receive, send)
            return
        given = b"".join(v for k, v in scope.get("headers", ()) if k.lower() == b"authorization")
        if _token_ok(given, self.token):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        refused = JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                               headers={"WWW-Authenticate": "Bearer"})
        await refused(scope, receive, send)


def create_app(service: NodeService) -> FastAPI:
    """Build the FastAPI application for one running node.

    Parameters
    ----------
    service : NodeService
        The node (its store, queue, tracker and metrics).

    Returns
    -------
    FastAPI
        The application.
    """
    token = service.cfg.api.resolve_token()
    # The schema is served by an authenticated route below, not by FastAPI's open one.
    app = FastAPI(title="mrinode", version="0.1.0", openapi_url=None, docs_url=None, redoc_url=None)
    if token is not None:
        app.add_middleware(BearerGate, token=token, console=service.cfg.console.enabled)

    def auth(request: Request) -> None:
        # The gate refuses first; this keeps every route closed should the gate be removed.
        if token is None:
            return
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not _token_ok(given, token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(sqlite3.OperationalError)
    async def database_unavailable(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        log.error("REST %s %s: database unavailable: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": f"the node's database is unavailable ({exc}); try again later"},
                            status_code=503, headers={"Retry-After": "5"})

    @app.get("/openapi.json", dependencies=[Depends(auth)], include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    def study_dict(uid: str) -> dict[str, Any] | None:
        row = service.store.study(uid)
        if row is None:
            return None
        d = dict(row.__dict__)
        d["series"] = service.store.series_summary(uid)
        d["jobs"] = [j.id for j in service.queue.list_jobs(study_uid=uid)]
        return d

    @app.get("/health")
    def health() -> dict[str, Any]:
        # 200 also when degraded (a full disk): the node is up and answers C-ECHO; the body says why.
        return {**service.health(), "ae_title": service.cfg.node.ae_title, "dicom_port": service.scp.port,
                "uptime_s": round(time.time() - service.started_at, 1)}

    @app.get("/studies", dependencies=[Depends(auth)])
    def studies(limit: Limit = 200) -> list[dict[str, Any]]:
        return [dict(s.__dict__) for s in service.store.studies(limit=limit)]

    @app.get("/studies/{study_uid}", dependencies=[Depends(auth)])
    def study(study_uid: StudyUid) -> dict[str, Any]:
        d = study_dict(study_uid)
        if d is None:
            raise HTTPException(status_code=404, detail=f"study {study_uid} has no instance on this node")
        return d

    @app.post("/studies/{study_uid}/complete", dependencies=[Depends(auth)])
    def complete(study_uid: StudyUid) -> dict[str, Any]:
        try:
            job = service.complete_study(study_uid)
        except KeyError:
            raise HTTPException(status_code=404, detail=f"study {study_uid} has no instance on this node") from None
        return {"study_uid": study_uid, "job_id": job, "queued": job is not None}

    @app.get("/jobs", dependencies=[Depends(auth)])
    def jobs(
        state: Annotated[str | None, Query(max_length=32, description="one of " + ", ".join(JOB_STATES))] = None,
        study_uid: Annotated[str | None, Query(min_length=1, max_length=MAX_UID_CHARS)] = None,
        limit: Limit = 200,
    ) -> list[dict[str, Any]]:
        if state is not None and state not in JOB_STATES:
            raise HTTPException(status_code=422, detail=f"state {state!r} is not a job state; use one of "
                                                        f"{', '.join(JOB_STATES)}")
        return [j.as_dict() for j in service.queue.list_jobs(state=state, study_uid=study_uid, limit=limit)]

    @app.get("/jobs/{job_id}", dependencies=[Depends(auth)])
    def job(job_id: JobId) -> dict[str, Any]:
        j = service.queue.get(job_id)
        if j is None:
            raise HTTPException(status_code=404, detail=f"there is no job {job_id}")
        return j.as_dict()

    @app.post("/jobs/{job_id}/retry", dependencies=[Depends(auth)])
    def retry(job_id: JobId, rerun: bool = False) -> dict[str, Any]:
        try:
            j = service.retry_job(job_id, rerun=rerun)
        except KeyError:
            raise HTTPException(status_code=404, detail=f"there is no job {job_id}") from None
        except ValueError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return dict(j.as_dict())

    @app.post("/jobs/{job_id}/{decision}", dependencies=[Depends(auth)])
    def review(job_id: JobId, decision: Annotated[str, Path(pattern="^(approve|reject)$")],
               by: Annotated[str, Query(min_length=1, max_length=64, description="who decides (audit log)")] = "api",
               reason: Annotated[str, Query(max_length=500)] = "") -> dict[str, Any]:
        # Review before export (export.require_approval) for tools other than the console.
        try:
            from dicom_node.console.auth import clean_name

            j = service.review_job(job_id, f"api:{clean_name(by)}", approve=decision == "approve", reason=reason)
        except KeyError:
            raise HTTPException(status_code=404, detail=f"there is no job {job_id}") from None
        except ValueError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return dict(j.as_dict())

    @app.get("/metrics", dependencies=[Depends(auth)])
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(content=service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(scale_router(service))  # issue 17: the spool over WADO-RS, the Celery workers' reports
    if service.cfg.console.enabled:  # the operator's console (issue 21), behind its own sign-in
        from dicom_node.console import create_router

        app.include_router(create_router(service))
    return app
