"""The operator's web console: server-rendered pages on the REST API's port, under ``/console``.

Dashboard (received today, queue depth, running, held, failed, last export per
destination, disk space left), studies (series with the sequences identified, jobs), a
per-job timeline (received → complete → each stage with seconds → export attempts with
errors), failed and held jobs with retry, re-run, approve and reject, the installed models,
the destinations with a *test* button (C-ECHO / DICOMweb request), and the routing
decisions of the Orthanc plugin (``console.orthanc_url`` + ``/mrinode/decisions``).

Sign-in with the API token (:mod:`dicom_node.console.auth`); every page but the login
page and the stylesheet needs the session cookie. Templates and the stylesheet ship in
the package (no CDN, no build step); pages show times in the node's local time and UIDs in
full to the signed-in operator; nothing here logs a UID (the API's access log is off).
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from dicom_node.console.auth import COOKIE, SESSION_S, Session, SessionSigner

if TYPE_CHECKING:
    from dicom_node.service import NodeService

__all__ = ["create_router"]

log = logging.getLogger(__name__)

PREFIX = "/console"


def _templates() -> Any:
    import jinja2

    from dicom_node.console.views import local_time

    env = jinja2.Environment(loader=jinja2.PackageLoader("dicom_node.console", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]))
    env.filters["local"] = local_time
    return env


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body())[:65536].decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def create_router(service: NodeService) -> APIRouter:
    """The console's routes for one running node.

    Parameters
    ----------
    service : NodeService
        The node.

    Returns
    -------
    APIRouter
        Routes under ``/console``; include it in the API application.
    """
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    signer = SessionSigner(service.cfg.api.resolve_token())
    env = _templates()
    css = resources.files("dicom_node.console").joinpath("static/console.css").read_text()

    def session_of(request: Request) -> Session | None:
        return signer.check(request.cookies.get(COOKIE))

    def page(request: Request, template: str, session: Session, **ctx: Any) -> HTMLResponse:
        cookie = request.cookies.get(COOKIE, "")
        html = env.get_template(template).render(
            session=session, csrf=signer.csrf_value(cookie), node=service.cfg.node.ae_title, prefix=PREFIX, here=template,
            flash=request.query_params.get("msg", ""), **ctx)
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                           "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"})

    def need(request: Request) -> Session:
        s = session_of(request)
        if s is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise HTTPException(status_code=303, headers={"Location": f"{PREFIX}/login?next={quote(target)}"})
        return s

    async def posted(request: Request) -> tuple[Session, dict[str, str]]:
        s = need(request)
        form = await _form(request)
        if not signer.csrf_ok(request.cookies.get(COOKIE, ""), form.get("csrf", "")):
            raise HTTPException(status_code=403, detail="the form is stale; reload the page")
        return s, form

    def back(where: str, msg: str) -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}{where}?msg={quote(msg)}", status_code=303)

    @router.get("/static/console.css")
    def stylesheet() -> Response:
        return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> HTMLResponse:
        html = env.get_template("login.html").render(
            prefix=PREFIX, node=service.cfg.node.ae_title, needs_token=signer.token is not None,
            next=request.query_params.get("next", f"{PREFIX}/"), error=request.query_params.get("error", ""))
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        target = form.get("next") or f"{PREFIX}/"
        if not target.startswith(PREFIX + "/"):
            target = f"{PREFIX}/"
        if not signer.token_ok(form.get("token", "")):
            service.audit.record("console_login_refused", name=form.get("name", "")[:64])
            return RedirectResponse(f"{PREFIX}/login?error=1&next={quote(target)}", status_code=303)
        value = signer.issue(form.get("name", ""))
        session = signer.check(value)
        assert session is not None
        service.audit.record("console_login", by=session.who)
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(COOKIE, value, max_age=SESSION_S, path=PREFIX, secure=True, httponly=True, samesite="strict")
        return resp

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        s, _ = await posted(request)
        service.audit.record("console_logout", by=s.who)
        resp = RedirectResponse(f"{PREFIX}/login", status_code=303)
        resp.delete_cookie(COOKIE, path=PREFIX, secure=True, httponly=True, samesite="strict")
        return resp

    @router.get("/", response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        from dicom_node.console.views import dashboard

        s = need(request)
        held = service.queue.list_jobs(state="awaiting_review", limit=50)
        failed = service.queue.list_jobs(state="failed", limit=20)
        recent = service.queue.list_jobs(limit=15)
        return page(request, "dashboard.html", s, d=dashboard(service), held=held, failed=failed, recent=recent)

    @router.get("/studies", response_class=HTMLResponse)
    def studies(request: Request) -> HTMLResponse:
        s = need(request)
        return page(request, "studies.html", s, studies=service.store.studies(limit=200))

    @router.get("/studies/{study_uid}", response_class=HTMLResponse)
    def study(request: Request, study_uid: str) -> HTMLResponse:
        from dicom_node.console.views import study_view

        s = need(request)
        view = study_view(service, study_uid[:1024])
        if view is None:
            raise HTTPException(status_code=404, detail="no such study on this node")
        return page(request, "study.html", s, v=view)

    @router.get("/jobs", response_class=HTMLResponse)
    def jobs(request: Request) -> HTMLResponse:
        from dicom_node.queue import JOB_STATES

        s = need(request)
        state = request.query_params.get("state") or None
        if state is not None and state not in JOB_STATES:
            state = None
        return page(request, "jobs.html", s, jobs=service.queue.list_jobs(state=state, limit=200), state=state,
                    states=JOB_STATES)

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job(request: Request, job_id: int) -> HTMLResponse:
        from dicom_node.console.views import job_timeline

        s = need(request)
        j = service.queue.get(job_id)
        if j is None:
            raise HTTPException(status_code=404, detail=f"there is no job {job_id}")
        return page(request, "job.html", s, j=j, timeline=job_timeline(service, j))

    @router.post("/jobs/{job_id}/{action}")
    async def act(request: Request, job_id: int, action: str) -> Response:
        s, form = await posted(request)
        try:
            if action == "approve":
                service.review_job(job_id, s.who, approve=True)
                msg = f"job {job_id} approved: its results are being sent"
            elif action == "reject":
                service.review_job(job_id, s.who, approve=False, reason=form.get("reason", "")[:500])
                msg = f"job {job_id} rejected: nothing is sent"
            elif action in ("retry", "rerun"):
                updated = service.retry_job(job_id, rerun=action == "rerun")
                service.audit.record("console_retry", job=job_id, by=s.who, rerun=action == "rerun")
                msg = f"job {job_id}: " + ("re-running it" if updated.state == "queued" else
                                           f"re-sending its results ({updated.state})")
            else:
                raise HTTPException(status_code=404, detail=f"no action {action!r}")
        except KeyError:
            raise HTTPException(status_code=404, detail=f"there is no job {job_id}") from None
        except ValueError as exc:
            msg = str(exc)
        return back(f"/jobs/{job_id}", msg)

    @router.get("/models", response_class=HTMLResponse)
    def models(request: Request) -> HTMLResponse:
        from dicom_node.console.views import models_view, registry_view

        s = need(request)
        return page(request, "models.html", s, models=models_view(service), pipelines=service.cfg.pipelines,
                    registries=registry_view(service))

    @router.get("/destinations", response_class=HTMLResponse)
    def destinations(request: Request) -> HTMLResponse:
        s = need(request)
        return page(request, "destinations.html", s, destinations=service.cfg.destinations,
                    routing=service.cfg.routing)

    @router.post("/destinations/{name}/test")
    async def test_destination(request: Request, name: str) -> Response:
        from dicom_node.startup import echo_destination

        s, _ = await posted(request)
        try:
            dest = service.cfg.destination(name)
        except KeyError:
            raise HTTPException(status_code=404, detail="no such destination") from None
        try:
            why = echo_destination(dest, calling_ae=service.cfg.node.ae_title)
        except (OSError, RuntimeError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        service.audit.record("destination_tested", destination=name, by=s.who, ok=why is None)
        return back("/destinations", f"{name}: answers" if why is None else f"{name}: does not answer: {why}")

    @router.get("/routing", response_class=HTMLResponse)
    def routing(request: Request) -> HTMLResponse:
        s = need(request)
        url = service.cfg.console.orthanc_url.rstrip("/")
        decisions: list[dict[str, Any]] = []
        error = ""
        if url:
            import httpx

            auth_cfg = service.cfg.console.orthanc_auth
            headers: dict[str, str] = {}
            auth: tuple[str, str] | None = None
            if auth_cfg is not None and auth_cfg.token:
                headers["Authorization"] = f"Bearer {auth_cfg.token}"
            elif auth_cfg is not None and auth_cfg.username is not None:
                auth = (auth_cfg.username, auth_cfg.password or "")
            try:
                r = httpx.get(f"{url}/mrinode/decisions", params={"limit": "200"}, headers=headers, auth=auth,
                              timeout=5.0)
                r.raise_for_status()
                decisions = list(reversed(r.json()))
            except (httpx.HTTPError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        return page(request, "routing.html", s, decisions=decisions, url=url, error=error)

    return router
