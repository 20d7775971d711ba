"""``mrinode retrain`` — scheduled retraining with a model registry (see :mod:`training.retrain`)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def _schedule(args: argparse.Namespace) -> int:
    from training.retrain import load_retrain_config, run_once, schedule

    try:
        cfg = load_retrain_config(args.config)
    except ValueError as exc:
        print(f"mrinode retrain: {exc}", file=sys.stderr)
        return 2
    if args.now:
        try:
            outcome = run_once(cfg)
        except (RuntimeError, ValueError, OSError) as exc:
            print(f"mrinode retrain: {exc}", file=sys.stderr)
            return 1
        state = "promoted" if outcome.promoted else "registered, not promoted"
        print(f"{outcome.entry.name} {outcome.entry.version}: {state} ({outcome.reason})")
        print(f"registry: {cfg.registry_dir}")
        return 0
    schedule(cfg)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``retrain schedule``."""
    p = subparsers.add_parser("retrain", help="scheduled retraining into a model registry")
    sub = p.add_subparsers(dest="retrain_command", metavar="ACTION")
    sub.required = True
    s = sub.add_parser("schedule", help="fine-tune on a cron schedule; register and promote better bundles")
    s.add_argument("--config", required=True, help="retraining TOML file (see training/configs/retrain-demo.toml)")
    s.add_argument("--now", action="store_true", help="run once now and exit instead of waiting for the schedule")
    s.set_defaults(func=_schedule)
