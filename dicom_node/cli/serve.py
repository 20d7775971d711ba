"""``mrinode serve --config FILE``: run the node (SCP, tracker, workers, export, REST API)."""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from dicom_node.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"mrinode serve: {exc}", file=sys.stderr)
        return 2
    if args.log_level.upper() == "INFO" and cfg.logging.level.upper() != "INFO":
        from dicom_node.logs import configure_logging

        try:
            configure_logging(cfg.logging.level, verbose=args.verbose)
        except ValueError as exc:
            print(f"mrinode serve: config key 'logging.level': {exc}", file=sys.stderr)
            return 2
    from dicom_node.startup import run_checks

    report = run_checks(cfg, reach=True)
    serve_log = logging.getLogger("dicom_node.serve")
    for line in report.warnings:
        serve_log.warning("start-up check: %s", line)
    if report.errors:
        for line in report.errors:
            serve_log.error("start-up check: %s", line)
            print(f"mrinode serve: {line}", file=sys.stderr)
        print(f"mrinode serve: not starting ({len(report.errors)} error(s) above; `mrinode check --config "
              f"{args.config}` checks again without starting).", file=sys.stderr)
        return 2
    from dicom_node.service import NodeService

    try:
        service = NodeService(cfg)
    except ConfigError as exc:
        print(f"mrinode serve: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:  # e.g. the data folder cannot be written, the store cannot open
        logging.getLogger("dicom_node.serve").error("cannot start: %s", exc)
        print(f"mrinode serve: cannot start: {exc} (data folder {cfg.node.data_dir})", file=sys.stderr)
        return 1
    try:
        service.serve_forever()
    except OSError as exc:
        logging.getLogger("dicom_node.serve").error("cannot start: %s", exc)
        print(f"mrinode serve: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``serve`` sub-command."""
    p = subparsers.add_parser(
        "serve",
        help="run the DICOM node (SCP, study tracker, workers, export, REST API)",
        description="Run the DICOM node until SIGTERM/SIGINT. See deploy/node.example.toml for every setting.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="node configuration (TOML)")
    p.set_defaults(func=_run)
