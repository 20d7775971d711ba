"""The REST API (FastAPI): health, studies, jobs, retry, complete, Prometheus metrics.

Every endpoint except ``GET /health`` needs ``Authorization: Bearer <token>`` when
``api.token`` (or ``api.token_file``) is set. Responses carry full UIDs (the caller is
an operator or the PACS plugin); log lines do not.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response

if TYPE_CHECKING:
    from dicom_node.service import NodeService

__all__ = ["create_app"]


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
    app = FastAPI(title="mrinode", version="0.1.0", docs_url=None, redoc_url=None)

    def auth(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

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
        return {"status": "ok", "ae_title": service.cfg.node.ae_title, "dicom_port": service.scp.port,
                "uptime_s": round(time.time() - service.started_at, 1)}

    @app.get("/studies", dependencies=[Depends(auth)])
    def studies(limit: int = 200) -> list[dict[str, Any]]:
        return [dict(s.__dict__) for s in service.store.studies(limit=limit)]

    @app.get("/studies/{study_uid}", dependencies=[Depends(auth)])
    def study(study_uid: str) -> dict[str, Any]:
        d = study_dict(study_uid)
        if d is None:
            raise HTTPException(status_code=404, detail=f"study {study_uid} has no instance on this node")
        return d

    @app.post("/studies/{study_uid}/complete", dependencies=[Depends(auth)])
    def complete(study_uid: str) -> dict[str, Any]:
        try:
            job = service.complete_study(study_uid)
        except KeyError:
            raise HTTPException(status_code=404, detail=f"study {study_uid} has no instance on this node") from None
        return {"study_uid": study_uid, "job_id": job, "queued": job is not None}

    @app.get("/jobs", dependencies=[Depends(auth)])
    def jobs(state: str | None = None, study_uid: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        return [j.as_dict() for j in service.queue.list_jobs(state=state, study_uid=study_uid, limit=limit)]

    @app.get("/jobs/{job_id}", dependencies=[Depends(auth)])
    def job(job_id: int) -> dict[str, Any]:
        j = service.queue.get(job_id)
        if j is None:
            raise HTTPException(status_code=404, detail=f"there is no job {job_id}")
        return j.as_dict()

    @app.post("/jobs/{job_id}/retry", dependencies=[Depends(auth)])
    def retry(job_id: int, rerun: bool = False) -> dict[str, Any]:
        try:
            j = service.retry_job(job_id, rerun=rerun)
        except KeyError:
            raise HTTPException(status_code=404, detail=f"there is no job {job_id}") from None
        except ValueError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return dict(j.as_dict())

    @app.get("/metrics", dependencies=[Depends(auth)])
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(content=service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
