"""The node's API for remote workers: the spool read-only over DICOMweb, and the task reports.

- ``GET /dicom-web/studies/{study}``: WADO-RS retrieve of a study's instances as received
  (``multipart/related; type="application/dicom"``), read-only, straight from the spool;
- ``POST /scale/tasks/{task}/start``: a worker is about to run a task (the answer says whether to);
- ``PUT /scale/tasks/{task}/{delivery}/files/{path}``: one result file (raw body);
- ``POST /scale/tasks/{task}/{delivery}/result``: the run's result (the job moves to ``exporting``);
- ``POST /scale/tasks/{task}/failed``: a failed run (``final``: the job fails).

Every route needs the API's bearer token, and is refused (403) when the node has none, even
if the rest of the API is open on loopback. The task routes answer 409 unless
``[scale] engine = "celery"``.
"""

from __future__ import annotations

import hmac
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from dicom_node.scale.dispatcher import CeleryDispatcher, Verdict
    from dicom_node.service import NodeService

__all__ = ["scale_router"]

#: The largest result file a worker may upload (bytes).
MAX_UPLOAD_BYTES = 2 << 30
_BOUNDARY = "mrinode-wado-boundary-7c1f"
_PART = re.compile(r"^[^/\\\x00]{1,255}$")

StudyUid = Annotated[str, PathParam(min_length=1, max_length=1024)]
TaskId = Annotated[str, PathParam(min_length=36, max_length=36)]
Delivery = Annotated[int, PathParam(ge=1, le=1_000_000)]


class StartReport(BaseModel):
    """``POST /scale/tasks/{task}/start``."""

    worker: str = Field(min_length=1, max_length=200)


class ResultReport(BaseModel):
    """``POST /scale/tasks/{task}/{delivery}/result``."""

    worker: str = Field(min_length=1, max_length=200)
    outputs: list[str] = Field(default_factory=list, max_length=10_000)
    summary: dict[str, Any] = Field(default_factory=dict)
    durations: dict[str, float] = Field(default_factory=dict)
    loads: list[tuple[str, str]] = Field(default_factory=list)
    run_done_at: float | None = None
    restarts: dict[str, int] = Field(default_factory=dict, max_length=16)


class FailedReport(BaseModel):
    """``POST /scale/tasks/{task}/failed``."""

    error: str = Field(max_length=20_000)
    final: bool = False
    restarts: dict[str, int] = Field(default_factory=dict, max_length=16)


def _safe_relpath(path: str) -> Path:
    """A result file's path inside an upload, refused (422) if it could leave it."""
    parts = path.split("/")
    if not parts or any(p in ("", ".", "..") or not _PART.match(p) for p in parts) or len(parts) > 8:
        raise HTTPException(status_code=422, detail="the file path must be relative, without '.', '..' or '\\'")
    return Path(*parts)


def _answer(v: Verdict) -> JSONResponse:
    return JSONResponse(v.body, status_code=v.status)


def scale_router(service: NodeService) -> APIRouter:
    """The routes above for one running node.

    Parameters
    ----------
    service : NodeService
        The node (its store, and its dispatcher when the engine is ``celery``).

    Returns
    -------
    APIRouter
        The router, to include in the node's FastAPI application.
    """
    token = service.cfg.api.resolve_token()

    def auth(request: Request) -> None:
        if token is None:
            raise HTTPException(status_code=403, detail="the node has no API token (api.token); the worker "
                                                        "routes are closed")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    def dispatcher() -> CeleryDispatcher:
        from dicom_node.scale.dispatcher import CeleryDispatcher

        d = service.workers
        if not isinstance(d, CeleryDispatcher):
            raise HTTPException(status_code=409, detail="this node runs its jobs itself ([scale] engine = 'local')")
        return d

    def task_id_ok(task_id: str) -> str:
        try:
            return str(uuid.UUID(task_id))
        except ValueError:
            raise HTTPException(status_code=422, detail="not a task id") from None

    router = APIRouter(dependencies=[Depends(auth)])

    @router.get("/dicom-web/studies/{study_uid}", include_in_schema=True)
    def retrieve_study(study_uid: StudyUid) -> StreamingResponse:
        paths = service.store.instance_paths(study_uid)
        if not paths:
            raise HTTPException(status_code=404, detail="no such study on this node")

        def parts() -> Iterator[bytes]:
            for p in paths:
                try:
                    data = p.read_bytes()
                except OSError:
                    continue  # removed since it was indexed (a replaced instance): skipped
                yield f"--{_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
            yield f"--{_BOUNDARY}--\r\n".encode()

        media = f'multipart/related; type="application/dicom"; boundary={_BOUNDARY}'
        return StreamingResponse(parts(), media_type=media)

    @router.post("/scale/tasks/{task_id}/start")
    def start(task_id: TaskId, report: StartReport) -> JSONResponse:
        return _answer(dispatcher().on_start(task_id_ok(task_id), report.worker))

    @router.put("/scale/tasks/{task_id}/{delivery}/files/{path:path}")
    async def upload(task_id: TaskId, delivery: Delivery, path: str, request: Request) -> dict[str, Any]:
        d = dispatcher()
        rel = _safe_relpath(path)
        task_id = task_id_ok(task_id)
        if not d.accepts_upload(task_id, delivery):
            raise HTTPException(status_code=409, detail="no started task of this id and delivery")
        target = d.stage_dir(task_id, delivery) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".part-{uuid.uuid4().hex[:8]}")
        size = 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise HTTPException(status_code=413, detail=f"a result file is limited to {MAX_UPLOAD_BYTES} bytes")
                    f.write(chunk)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return {"stored": str(rel), "bytes": size}

    @router.post("/scale/tasks/{task_id}/{delivery}/result")
    def result(task_id: TaskId, delivery: Delivery, report: ResultReport) -> JSONResponse:
        for o in report.outputs:
            _safe_relpath(o)
        d = dispatcher()
        d.count_restarts(report.restarts)
        verdict = d.on_result(task_id_ok(task_id), delivery, report.model_dump())
        if verdict.status == 200:
            service.exporter.wake.set()
        return _answer(verdict)

    @router.post("/scale/tasks/{task_id}/failed")
    def failed(task_id: TaskId, report: FailedReport) -> JSONResponse:
        d = dispatcher()
        d.count_restarts(report.restarts)
        return _answer(d.on_failed(task_id_ok(task_id), report.error, report.final))

    return router
