"""``mrinode check --config FILE``: the start-up checks of ``mrinode serve``, without starting the node."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from dicom_node.config import ConfigError, load_config
    from dicom_node.startup import run_checks

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"ERROR {exc}")
        return 2
    print(f"ok    {args.config}: every key valid")
    report = run_checks(cfg, reach=not args.no_reach)
    for line in report.passed:
        print(f"ok    {line}")
    for line in report.warnings:
        print(f"WARN  {line}")
    for line in report.errors:
        print(f"ERROR {line}")
    if report.errors:
        print(f"mrinode check: {len(report.errors)} error(s): `mrinode serve` would refuse to start.", file=sys.stderr)
        return 1
    print(f"mrinode check: the node can start ({len(report.warnings)} warning(s)).")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``check`` sub-command."""
    p = subparsers.add_parser(
        "check",
        help="check a configuration as `serve` does before it listens (pipelines, bundles, destinations, routing)",
        description="Validate the configuration, import every enabled pipeline, load every bundle it names (card, "
                    "SHA-256), C-ECHO/ping every destination and check that routing delivers somewhere. Exit 0: the "
                    "node can start (warnings are printed); 1: it would refuse; 2: the file is invalid.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="node configuration (TOML)")
    p.add_argument("--no-reach", action="store_true", help="do not contact the destinations")
    p.set_defaults(func=_run)
