"""``mrinode retrain run-once|schedule|history`` — retraining from the PACS's corrections (see :mod:`training.retrain`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]


def _load(args: argparse.Namespace) -> Any:
    from training.retrain import load_retrain_config

    try:
        return load_retrain_config(args.config)
    except ValueError as exc:
        print(f"mrinode retrain: {exc}", file=sys.stderr)
        return None


def _print(outcome: Any) -> None:
    print(f"{outcome.model}: {outcome.decision} ({outcome.reason}) in {outcome.seconds:.1f} s")
    if outcome.candidate_version:
        print(f"candidate {outcome.candidate_version}; previous {outcome.previous_version or '-'}")
    for key in sorted(set(outcome.candidate_metrics) | set(outcome.previous_metrics)):
        old, new = outcome.previous_metrics.get(key), outcome.candidate_metrics.get(key)
        print(f"    {key}: {'-' if old is None else f'{old:.4f}'} -> {'-' if new is None else f'{new:.4f}'}")
    data = {k: v for k, v in outcome.data.items() if k != "harvest"}
    if data:
        print("data: " + ", ".join(f"{k}={v}" for k, v in data.items()))


def _run_once(args: argparse.Namespace) -> int:
    from training.retrain import run_once

    cfg = _load(args)
    if cfg is None:
        return 2
    try:
        outcome = run_once(cfg)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"mrinode retrain: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(outcome.record(), indent=2))
    else:
        _print(outcome)
        print(f"registry: {cfg.registry_dir}")
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from training.retrain import schedule

    cfg = _load(args)
    if cfg is None:
        return 2
    if args.now:
        return _run_once(args)
    schedule(cfg, args.config)
    return 0


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _history(args: argparse.Namespace) -> int:
    from training.retrain import history

    cfg = _load(args)
    if cfg is None:
        return 2
    runs = history(cfg, limit=args.limit)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print(f"no retraining runs recorded in {cfg.registry_dir}")
    for r in runs:
        target = r.get("metric", "")
        old, new = r.get("previous_metrics", {}).get(target), r.get("candidate_metrics", {}).get(target)
        d = r.get("data", {})
        print(f"#{r['id']} {r['started_at']} {r.get('model', '')}: {r['decision']} in {r.get('seconds', 0):.1f} s; "
              f"{target} {_fmt(old)} -> {_fmt(new)}; training set v{d.get('dataset_version', '-')}, "
              f"{d.get('harvested_cases', 0)} harvested ({d.get('new_cases', 0)} new), "
              f"{d.get('train_subjects', '-')} trained on; {r.get('reason', '')}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``retrain run-once|schedule|history``."""
    p = subparsers.add_parser("retrain", help="harvest corrections, fine-tune, gate and promote on a schedule")
    sub = p.add_subparsers(dest="retrain_command", metavar="ACTION")
    sub.required = True
    cfg_help = "retraining TOML file (see training/configs/retrain-demo.toml)"
    o = sub.add_parser("run-once", help="harvest, fine-tune, gate, promote or refuse, record; once, now")
    o.add_argument("--config", required=True, help=cfg_help)
    o.add_argument("--json", action="store_true", help="print the run's record as JSON")
    o.set_defaults(func=_run_once)
    s = sub.add_parser("schedule", help="run on the config's cron schedule (persistent job store) until stopped")
    s.add_argument("--config", required=True, help=cfg_help)
    s.add_argument("--now", action="store_true", help="run once now and exit (same as run-once)")
    s.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(func=_schedule)
    h = sub.add_parser("history", help="list the recorded retraining runs, newest first")
    h.add_argument("--config", required=True, help=cfg_help)
    h.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    h.add_argument("--json", action="store_true", help="print JSON")
    h.set_defaults(func=_history)
