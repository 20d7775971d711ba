"""``mrinode jobs``: list, show and retry jobs, directly in the node's store database.

A running ``mrinode serve`` on the same configuration picks up a retried job within a
second (it polls the database).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

__all__ = ["register"]


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


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
    store = Store(cfg.db_path)
    queue = JobQueue(store)
    action = args.action or "list"
    try:
        if action == "list":
            if args.state and args.state not in JOB_STATES:
                print(f"mrinode jobs: --state {args.state!r} is not one of {', '.join(JOB_STATES)}.", file=sys.stderr)
                return 2
            jobs = queue.list_jobs(state=args.state, limit=args.limit)
            if args.json:
                print(json.dumps([j.as_dict() for j in jobs], indent=2, default=str))
                return 0
            print(f"{'ID':>5}  {'STATE':<9}  {'RUNS':>4}  {'SENDS':>5}  {'STUDY':<14}  {'UPDATED':<19}  LAST ERROR")
            for j in jobs:
                err = (j.last_error or "").replace("\n", " ")[:70]
                print(f"{j.id:>5}  {j.state:<9}  {j.attempts:>4}  {j.export_attempts:>5}  {uid_tag(j.study_uid):<14}  "
                      f"{_fmt_time(j.updated_at):<19}  {err}")
            return 0
        job = queue.get(args.id)
        if job is None:
            print(f"mrinode jobs: there is no job {args.id}.", file=sys.stderr)
            return 1
        if action == "show":
            print(json.dumps(job.as_dict(), indent=2, default=str))
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


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``jobs`` sub-command (``list``, ``show ID``, ``retry ID``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", dest="action_config", metavar="FILE", default=None,
                        help="node configuration (TOML); default: $MRINODE_CONFIG")
    p = subparsers.add_parser("jobs", help="list, show and retry the node's jobs",
                              description="List, show and retry jobs in the node's store database.")
    p.add_argument("--config", metavar="FILE", default=None, help="node configuration (TOML); default: $MRINODE_CONFIG")
    p.set_defaults(func=_run, action=None, action_config=None, state=None, limit=50, json=False)
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    lst = sub.add_parser("list", parents=[common], help="list jobs, newest first (the default)")
    lst.add_argument("--state", help="only jobs in this state (queued, running, exporting, done, failed)")
    lst.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    show = sub.add_parser("show", parents=[common], help="print one job as JSON")
    show.add_argument("id", type=int)
    retry = sub.add_parser("retry", parents=[common],
                           help="re-send a job's results (when kept) or re-run it")
    retry.add_argument("id", type=int)
    retry.add_argument("--rerun", action="store_true", help="re-run the pipelines even if results are kept")
