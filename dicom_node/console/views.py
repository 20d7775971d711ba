"""What the console's pages show, gathered from the store, the queue, the audit log and the configuration.

Nothing here renders HTML or logs a UID; the pages (Jinja2 templates, autoescaped) show
full UIDs to the signed-in operator only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_node.logs import uid_tag

if TYPE_CHECKING:
    from dicom_node.queue import Job
    from dicom_node.service import NodeService

__all__ = ["TimelineEvent", "audit_tail", "dashboard", "job_timeline", "local_time", "models_view", "registry_view",
           "study_view"]

#: The most audit-log bytes one page reads (its end).
AUDIT_TAIL_BYTES = 4 << 20


def local_time(t: float | str | None) -> str:
    """An epoch time (or an ISO 8601 UTC string from the audit log) in the node's local time, ``-`` if none."""
    if t is None or t == "":
        return "-"
    if isinstance(t, str):
        try:
            moment = datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            return t
    else:
        moment = datetime.fromtimestamp(t, tz=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _epoch(t: str) -> float:
    try:
        return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def audit_tail(path: Path, max_bytes: int = AUDIT_TAIL_BYTES) -> list[dict[str, Any]]:
    """The audit log's last events (at most ``max_bytes`` read from its end), oldest first."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line may be cut
    out = []
    for line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def dashboard(service: NodeService) -> dict[str, Any]:
    """Received today, queue depth, running, failed, held, last export per destination, disk space left."""
    midnight = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    conn = service.store.conn()
    received_today = int(conn.execute("SELECT COUNT(*) FROM studies WHERE first_at >= ?", (midnight,)).fetchone()[0])
    counts = service.queue.counts()
    last_sent: dict[str, dict[str, Any]] = {}
    last_error: dict[str, str] = {}
    for e in audit_tail(service.audit.path):
        if e.get("event") == "object_sent" and e.get("destination"):
            last_sent[str(e["destination"])] = e
        elif e.get("event") == "job_export_failed":
            last_error["*"] = str(e.get("error") or "")
    destinations = []
    for d in service.cfg.destinations:
        sent = last_sent.get(d.name)
        destinations.append({"name": d.name, "address": d.address, "kind": d.kind,
                             "last_sent": local_time(sent["time"]) if sent else "never",
                             "last_job": sent.get("job") if sent else None})
    free = service.spool.space.free_bytes()
    return {
        "received_today": received_today, "counts": counts, "queue_depth": counts.get("queued", 0),
        "running": counts.get("running", 0) + counts.get("exporting", 0), "failed": counts.get("failed", 0),
        "awaiting_review": counts.get("awaiting_review", 0), "destinations": destinations,
        "free_gib": round(free / 2**30, 1) if free >= 0 else None, "disk_low": service.spool.space.low(),
        "min_free_mb": service.cfg.dicom.min_free_mb, "require_approval": service.cfg.export.require_approval,
        "last_export_error": last_error.get("*"),
    }


def study_view(service: NodeService, study_uid: str) -> dict[str, Any] | None:
    """A study's series (with the sequences its jobs identified) and its jobs; ``None`` if unknown."""
    row = service.store.study(study_uid)
    if row is None:
        return None
    jobs = service.queue.list_jobs(study_uid=study_uid)
    by_tag: dict[str, dict[str, Any]] = {}  # series uid tag -> identification, from the newest job's result
    for j in jobs:
        for ident in _analysis(j).get("series") or []:
            if isinstance(ident, dict) and ident.get("series"):
                by_tag.setdefault(str(ident["series"]), ident)
    series = []
    for s in service.store.series_summary(study_uid):
        found = by_tag.get(uid_tag(str(s.get("series_uid"))), {})
        confidence = found.get("confidence")
        series.append({**s, "sequence": found.get("label", "-"),
                       "confidence": f"{float(confidence):.2f}" if isinstance(confidence, int | float) else "-"})
    return {"study": row, "series": series, "jobs": jobs, "first": local_time(row.first_at),
            "last": local_time(row.last_at), "completed": local_time(row.completed_at)}


def _analysis(job: Job) -> dict[str, Any]:
    """The analysis stage's record in a job's ``result.json`` (identification per series), or ``{}``."""
    if not job.result_dir:
        return {}
    try:
        data = json.loads((Path(job.result_dir) / "result.json").read_text())
    except (OSError, ValueError):
        return {}
    analysis = data.get("analysis") if isinstance(data, dict) else None
    return analysis if isinstance(analysis, dict) else {}


@dataclass
class TimelineEvent:
    """One line of a job's timeline."""

    time: float
    what: str
    detail: str = ""
    kind: str = "info"  # info, ok, warn, error
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def when(self) -> str:
        """The time in local time."""
        return local_time(self.time)


def job_timeline(service: NodeService, job: Job) -> list[TimelineEvent]:
    """Received → complete → each pipeline stage with seconds → export attempts with errors → the end."""
    events: list[TimelineEvent] = []
    study = service.store.study(job.study_uid)
    tag = uid_tag(job.study_uid)
    if study is not None:
        events.append(TimelineEvent(study.first_at, "study received", f"first instance from {study.calling_ae}; "
                                    f"{study.n_instances} instances so far"))
    sent: dict[str, int] = {}
    sent_at: dict[str, float] = {}
    for e in audit_tail(service.audit.path):
        ev, t = str(e.get("event")), _epoch(str(e.get("time", "")))
        if ev == "study_complete" and e.get("job") == job.id:
            events.append(TimelineEvent(t, "study complete", f"by {e.get('how')}, {e.get('instances')} instances"))
        if e.get("job") != job.id:
            continue
        if ev == "object_sent":
            dest = str(e.get("destination"))
            sent[dest] = sent.get(dest, 0) + 1
            sent_at[dest] = t
        elif ev == "job_run_failed":
            events.append(TimelineEvent(t, "pipeline run failed", str(e.get("error") or ""), "error",
                                        {"retried": e.get("retried")}))
        elif ev == "job_export_failed":
            events.append(TimelineEvent(t, f"export attempt {e.get('attempt')} failed", str(e.get("error") or ""),
                                        "warn" if e.get("retried") else "error"))
        elif ev == "job_awaiting_review":
            events.append(TimelineEvent(t, "awaiting review", f"{e.get('outputs')} result object(s) held", "warn"))
        elif ev == "job_approved":
            events.append(TimelineEvent(t, "approved", f"by {e.get('by')}", "ok"))
        elif ev == "job_rejected":
            events.append(TimelineEvent(t, "rejected", f"by {e.get('by')}" + (f": {e['reason']}" if e.get("reason")
                                                                                else ""), "error"))
        elif ev == "job_retried":
            events.append(TimelineEvent(t, "retried", "re-run" if e.get("rerun") else "re-send"))
        elif ev == "job_done":
            events.append(TimelineEvent(t, "done", f"{e.get('outputs')} object(s) delivered", "ok"))
        elif ev == "job_failed":
            events.append(TimelineEvent(t, "failed", str(e.get("error") or ""), "error"))
    for dest, n in sent.items():
        events.append(TimelineEvent(sent_at[dest], f"sent to {dest}", f"{n} object(s)", "ok"))
    events.append(TimelineEvent(job.created_at, "queued", f"job {job.id} ({tag})"))
    if job.started_at:
        start = job.started_at
        events.append(TimelineEvent(start, "pipelines started", f"run {job.attempts}"))
        stages = [(k.removeprefix("analysis_").removesuffix("_s"), v) for k, v in job.durations.items()
                  if k.startswith("analysis_")]
        for name, summary in job.summary.items():
            if isinstance(summary, dict):
                for stage, seconds in (summary.get("seconds") or {}).items():
                    stages.append((f"{name}: {stage}", float(seconds)))
        for stage, seconds in stages:
            events.append(TimelineEvent(start, f"stage {stage}", f"{seconds:.2f} s", extra={"stage": True}))
        if "pipeline_s" in job.durations:
            events.append(TimelineEvent(start + job.durations["pipeline_s"], "pipelines finished",
                                        f"{job.durations['pipeline_s']:.1f} s, {len(job.outputs)} result object(s)"))
    # Events of the same moment (10 ms) in the order of the path of a job.
    events.sort(key=lambda e: (round(e.time, 2), _rank(e.what)))
    return events


_ORDER = ("study received", "study complete", "queued", "pipelines started", "stage", "pipeline run failed",
          "pipelines finished", "retried", "awaiting review", "approved", "rejected", "export attempt", "sent to",
          "done", "failed")


def _rank(what: str) -> int:
    return next((i for i, w in enumerate(_ORDER) if what.startswith(w)), len(_ORDER))


def registry_view(service: NodeService) -> list[dict[str, Any]]:
    """For each enabled pipeline served from a model registry: every version, which is promoted, the promotions."""
    from models.versions import ModelRegistry, registry_root

    out = []
    for p in service.cfg.pipelines:
        model = p.options.get("model")
        root = registry_root(str(model)) if model and p.enabled else None
        if root is None:
            continue
        registry, name = ModelRegistry(root), Path(str(model)).name
        promoted = registry.promoted(name)
        out.append({"pipeline": p.name, "name": name, "root": str(root),
                    "promoted": promoted.version if promoted else None,
                    "versions": [{"version": e.version, "registered": local_time(e.registered_at), "note": e.note,
                                  "metrics": ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                       for k, v in list(e.metrics.items())[:4]),
                                  "promoted": promoted is not None and e.version == promoted.version}
                                 for e in reversed(registry.versions(name))],
                    "history": [{**h, "at": local_time(h.get("at"))} for h in reversed(registry.history(name))]})
    return out


def models_view(service: NodeService) -> list[dict[str, Any]]:
    """The installed bundles: name, version, kind, sequences, labels, and which pipelines use them."""
    from models.registry import list_models

    used: dict[str, list[str]] = {}
    for p in service.cfg.pipelines:
        model = p.options.get("model")
        if model and p.enabled:
            used.setdefault(Path(str(model)).name, []).append(p.name)
    out = []
    for ref in list_models(None):
        c = ref.card
        out.append({"name": c.name, "version": c.version, "kind": ref.kind, "task": c.task, "path": str(ref.path),
                    "required": c.required_sequences, "optional": c.optional_sequences,
                    "labels": [{"value": lab.value, "name": lab.name,
                                "colour": "#" + "".join(f"{x:02x}" for x in lab.colour)} for lab in c.labels],
                    "used_by": used.get(c.name, []) + used.get(ref.path.name, [])})
    return out
