"""``mrinode identify PATH [--json]`` — the MRI sequence of every series in a folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from dicom_node.identify import identify_study

    path = Path(args.path)
    if not path.exists():
        print(f"mrinode identify: {path} does not exist.", file=sys.stderr)
        return 2
    rows = identify_study(path, use_pixels=not args.headers_only, threshold=args.threshold)
    if not rows:
        print(f"mrinode identify: no DICOM series found under {path}.", file=sys.stderr)
        return 1
    if args.json:
        json.dump([r.to_dict() for r in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Series under {path}", show_lines=False)
    for name, justify in (("#", "right"), ("description", "left"), ("label", "left"), ("conf.", "right"), ("source", "left"), ("main evidence", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        ident = r.identification
        label = ident.label.value
        if ident.label.value == "UNKNOWN" and ident.candidate is not None and ident.candidate.value != "UNKNOWN":
            label = f"UNKNOWN ({ident.candidate.value}?)"
        main = r.error or (ident.evidence[0] if ident.evidence else "")
        table.add_row(
            "" if r.series_number is None else str(r.series_number),
            r.description or (f"({r.modality})" if r.modality else ""),
            label,
            f"{ident.confidence:.2f}",
            ident.source,
            main,
        )
    Console().print(table)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``identify`` sub-command.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The ``mrinode`` sub-parsers.
    """
    p = subparsers.add_parser(
        "identify",
        help="identify the MRI sequence of every series under PATH",
        description="Identify the MRI sequence (T1, T1C, T2, FLAIR, PD, DWI, ADC, SWI, LOCALIZER, OTHER) of every "
        "series under PATH from its headers and pixels; UNKNOWN when not confident.",
    )
    p.add_argument("path", metavar="PATH", help="a study folder (searched recursively) or a DICOM file")
    p.add_argument("--json", action="store_true", help="print JSON (one object per series) instead of a table")
    p.add_argument("--headers-only", action="store_true", help="skip the pixel classifier")
    p.add_argument("--threshold", type=float, default=0.6, help="confidence below which a series is UNKNOWN (default 0.6)")
    p.set_defaults(func=_run)
