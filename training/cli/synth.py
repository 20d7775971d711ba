"""``mrinode synth`` — write synthetic multi-sequence brain MRI subjects (NIfTI, optionally DICOM)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["register"]

log = logging.getLogger(__name__)

_DEFAULT_SEQUENCES = "T1,T1C,T2,FLAIR"


def _run(args: argparse.Namespace) -> int:
    from dicom_node.sequences import parse_sequence_label

    try:
        sequences = [parse_sequence_label(s) for s in args.sequences.split(",") if s.strip()]
    except ValueError as exc:
        print(f"mrinode synth: --sequences: {exc}", file=sys.stderr)
        return 2
    if args.subjects < 1:
        print("mrinode synth: --subjects must be at least 1.", file=sys.stderr)
        return 2
    if args.voxel_mm <= 0:
        print("mrinode synth: --voxel-mm must be positive.", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(max(1, min(args.threads, torch.get_num_threads())))
    from training.synth import generate_subject, write_subject

    out = Path(args.out)
    for i in range(args.subjects):
        seed = args.seed + i
        try:
            subject = generate_subject(
                seed,
                field_strength=args.field_strength,
                tumour_free_fraction=args.tumour_free_fraction,
                sequences=sequences,
                voxel_mm=args.voxel_mm,
                vendor=args.vendor,
                anatomy=None if args.anatomy == "random" else args.anatomy,
            )
        except (ValueError, FileNotFoundError) as exc:  # bad option, or a template package missing
            print(f"mrinode synth: {exc}", file=sys.stderr)
            return 2
        folder = write_subject(subject, out, dicom=args.dicom, nifti=not args.no_nifti)
        print(f"{folder} vendor={subject.params['vendor']} anatomy={subject.params['anatomy_source']} "
              f"tumour={subject.params['tumour']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``synth`` sub-command."""
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic multi-sequence brain MRI subjects (NIfTI, optionally DICOM)",
        description=(
            "Generate physics-based synthetic brain MRI subjects with glioma-like tumours. "
            "Subject i uses seed S+i; the same seed gives identical output."
        ),
    )
    p.add_argument("--out", required=True, help="output folder (one sub-folder per subject)")
    p.add_argument("--subjects", type=int, default=1, help="number of subjects (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first subject (default 0)")
    p.add_argument("--dicom", action="store_true", help="also write a DICOM MR study per subject")
    p.add_argument("--no-nifti", action="store_true", help="skip the NIfTI images (params.json is always written)")
    p.add_argument("--field-strength", type=float, choices=(1.5, 3.0), default=3.0, help="tesla (default 3.0)")
    p.add_argument("--tumour-free-fraction", type=float, default=0.2, help="probability of a tumour-free subject (default 0.2)")
    p.add_argument("--sequences", default=_DEFAULT_SEQUENCES,
                   help=f"comma-separated labels from T1,T1C,T2,FLAIR,PD,DWI,ADC,SWI,LOCALIZER (default {_DEFAULT_SEQUENCES})")
    p.add_argument("--voxel-mm", type=float, default=1.0, help="grid spacing of the NIfTI output (default 1.0)")
    p.add_argument("--vendor", choices=("siemens", "ge", "philips"), default=None, help="header style (default: random per subject)")
    p.add_argument("--anatomy", choices=("random", "mni152", "cat12"), default="random",
                   help="brain anatomy source: MNI152 2009a tissue maps, the CAT12 shooting template, "
                        "or one drawn per subject (default random)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.set_defaults(func=_run)
