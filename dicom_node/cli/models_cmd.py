"""``mrinode models list``: the installed model bundles."""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def _list(args: argparse.Namespace) -> int:
    from models.bundle import list_bundles

    bundles = list_bundles([args.models_dir] if args.models_dir else None)
    if args.json:
        print(json.dumps([{"name": b.name, "version": b.card.version, "task": b.card.task, "path": str(b.path),
                           "channels": b.card.channels, "labels": [lab.name for lab in b.card.labels]} for b in bundles], indent=2))
        return 0
    if not bundles:
        print("no model bundles installed")
        return 0
    for b in bundles:
        c = b.card
        print(f"{c.name} {c.version}  task={c.task}  sequences={','.join(c.channels)}  "
              f"labels={','.join(lab.name for lab in c.labels)}  {b.path}")
        print(f"    {c.intended_use}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``models`` sub-command (``models list``)."""
    p = subparsers.add_parser("models", help="list installed model bundles")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True
    q = sub.add_parser("list", help="list installed model bundles")
    q.add_argument("--models-dir", default=None, help="extra folder with bundles")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_list)
