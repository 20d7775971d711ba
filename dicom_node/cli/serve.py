"""``mrinode serve`` — not implemented yet (placeholder registered so ``--help`` lists it)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    print("mrinode serve: not implemented yet", file=sys.stderr)
    return 2


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``serve`` sub-command (placeholder)."""
    p = subparsers.add_parser("serve", help="(not implemented yet)")
    p.set_defaults(func=_run)
