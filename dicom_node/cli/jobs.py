"""``mrinode jobs``: list, show, retry, approve and reject jobs, directly in the node's store database.

A running ``mrinode serve`` on the same configuration picks up a retried or approved job
within a second (it polls the database). Times are printed in ISO 8601 with the local
offset; ``show`` prints the job's last error in full (the last lines of its worker's log).
Retries, approvals and rejections made here go to the audit log like the console's.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicom_node.queue import Job

__all__ = ["iso_time", "job_view", "register"]

_TIME_KEYS = ("created_at", "updated_at", "started_at", "finished_at", "next_attempt_at")
#: States in which ``next_attempt_at`` means something (a run or an export attempt is due then).
_WAITING = ("queued", "exporting")


def iso_time(t: float | None) -> str | None:
    """An epoch time as ISO 8601 in local time with its offset (``2026-12-06T09:01:02+01:00``), or None."""
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds") if t else None


def job_view(job: Job) -> dict[str, Any]:
    """A job for people: ISO 8601 times, ``next_attempt_at`` only while a run or an export is due."""
    d = job.as_dict()
    for key in _TIME_KEYS:
        d[key] = iso_time(d[key])
    if job.state not in _WAITING or not job.next_attempt_at:
        d.pop("next_attempt_at")
    return d


def _last_line(error: str | None) -> str:
    lines = [x.strip() for x in (error or "").splitlines() if x.strip()]
    return lines[-1] if lines else ""


def _show(job: Job) -> None:
    view = job_view(job)
    error = view.pop("last_error")
    print(json.dumps(view, indent=2, default=str))
    if error:
        print("last error:")
        for line in error.splitlines():
            print(f"  {line}")


def _run(args: argparse.Namespace) -> int:
    from dicom_node.config import ConfigError, load_config
    from dicom_node.logs import uid_tag
    from dicom_node.queue import JOB_STATES, JobQueue
    from dicom_node.store import Store

    config = args.action_config or args.config or os.environ.get("MRINODE_CONFIG")
    if not config:
        print("mrinode jobs: give --config FILE (or set MRINODE_CONFIG).", file=sys.stderr)
        return 2
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        print(f"mrinode jobs: {exc}", file=sys.stderr)
        return 2
    if not cfg.db_path.exists():
        print(f"mrinode jobs: there is no store database at {cfg.db_path} (has the node run yet?).", file=sys.stderr)
        return 1
    from dicom_node.audit import AuditLog

    store = Store(cfg.db_path)
    queue = JobQueue(store, require_approval=cfg.export.require_approval)
    queue.listeners.append(AuditLog(cfg.audit_log_path).job_event)
    who = f"cli:{getpass.getuser()}"
    action = args.action or "list"
    try:
        if action == "list":
            if args.state and args.state not in JOB_STATES:
                print(f"mrinode jobs: --state {args.state!r} is not one of {', '.join(JOB_STATES)}.", file=sys.stderr)
                return 2
            jobs = queue.list_jobs(state=args.state, limit=args.limit)
            if args.json:
                print(json.dumps([job_view(j) for j in jobs], indent=2, default=str))
                return 0
            print(f"{'ID':>5}  {'STATE':<15}  {'RUNS':>4}  {'SENDS':>5}  {'STUDY':<14}  {'WORKER':<16}  {'UPDATED':<25}  "
                  "LAST ERROR (its last line; `jobs show ID` prints it all)")
            for j in jobs:
                err = _last_line(j.last_error)
                err = err if len(err) <= 130 else err[:64] + " … " + err[-63:]  # both ends of a long line
                print(f"{j.id:>5}  {j.state:<15}  {j.attempts:>4}  {j.export_attempts:>5}  {uid_tag(j.study_uid):<14}  "
                      f"{(j.worker or '-')[:16]:<16}  {iso_time(j.updated_at) or '-':<25}  {err}")
            return 0
        job = queue.get(args.id)
        if job is None:
            print(f"mrinode jobs: there is no job {args.id}.", file=sys.stderr)
            return 1
        if action == "show":
            if args.json:
                print(json.dumps(job_view(job), indent=2, default=str))
            else:
                _show(job)
            return 0
        if action in ("approve", "reject"):
            try:
                if action == "approve":
                    queue.approve(args.id, who)
                else:
                    queue.reject(args.id, who, args.reason or "")
            except ValueError as exc:
                print(f"mrinode jobs: {exc}.", file=sys.stderr)
                return 1
            print(f"job {args.id}: {action}d by {who}" + (" (its results are sent now)." if action == "approve" else "."))
            return 0
        try:
            updated = queue.retry(args.id, rerun=args.rerun)
        except ValueError as exc:
            print(f"mrinode jobs: {exc}.", file=sys.stderr)
            return 1
        what = "re-sending its results" if updated.state == "exporting" else "re-running it"
        print(f"job {updated.id}: {what} (state {updated.state}).")
        return 0
    finally:
        store.close()


JOB_STATES_HELP = ("queued", "running", "exporting", "awaiting_review", "done", "failed", "rejected")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``jobs`` sub-command (``list``, ``show ID``, ``retry ID``, ``approve ID``, ``reject ID``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", dest="action_config", metavar="FILE", default=None,
                        help="node configuration (TOML); default: $MRINODE_CONFIG")
    p = subparsers.add_parser("jobs", help="list, show and retry the node's jobs",
                              description="List, show and retry jobs in the node's store database.")
    p.add_argument("--config", metavar="FILE", default=None, help="node configuration (TOML); default: $MRINODE_CONFIG")
    p.set_defaults(func=_run, action=None, action_config=None, state=None, limit=50, json=False, reason="")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    lst = sub.add_parser("list", parents=[common], help="list jobs, newest first (the default)")
    lst.add_argument("--state", help="only jobs in this state (" + ", ".join(JOB_STATES_HELP) + ")")
    lst.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    show = sub.add_parser("show", parents=[common], help="print one job (times ISO 8601, its last error in full)")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="print JSON only (the error as one string)")
    approve = sub.add_parser("approve", parents=[common],
                             help="approve a job awaiting review (export.require_approval): its results are sent")
    approve.add_argument("id", type=int)
    reject = sub.add_parser("reject", parents=[common], help="reject a job awaiting review: nothing is sent")
    reject.add_argument("id", type=int)
    reject.add_argument("--reason", default="", help="why (kept in the job's error and the audit log)")
    retry = sub.add_parser("retry", parents=[common],
                           help="re-send a job's results (when kept) or re-run it")
    retry.add_argument("id", type=int)
    retry.add_argument("--rerun", action="store_true", help="re-run the pipelines even if results are kept")
