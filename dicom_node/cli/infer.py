"""``mrinode infer DICOM_DIR --out DIR [--model NAME] [--device auto|cpu|cuda]``: offline SEG + SR."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    import pydicom

    from dicom_node.io.grouping import iter_files
    from dicom_node.pipelines import PipelineRequest
    from dicom_node.pipelines.tumour import run
    from models.bundle import BundleError

    src = Path(args.dicom_dir)
    if not src.exists():
        print(f"mrinode infer: {src} does not exist.", file=sys.stderr)
        return 2
    files = iter_files(src)
    studies: set[str] = set()
    for f in files:
        try:
            studies.add(str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).get("StudyInstanceUID", "")))
        except (pydicom.errors.InvalidDicomError, OSError):
            continue
    studies.discard("")
    if len(studies) != 1:
        print(f"mrinode infer: {src} holds {len(studies)} DICOM studies; point it at exactly one.", file=sys.stderr)
        return 2
    options: dict[str, object] = {"model": args.model, "use_pixels": not args.headers_only}
    if args.models_dir:
        options["models_dir"] = args.models_dir
    if args.overlap is not None:
        options["overlap"] = args.overlap
    request = PipelineRequest(study_uid=studies.pop(), instance_paths=files, out_dir=Path(args.out), options=options,
                              device=args.device)
    try:
        result = run(request)
    except (BundleError, ValueError) as exc:
        print(f"mrinode infer: {exc}", file=sys.stderr)
        return 2
    s = result.summary
    if args.json:
        print(json.dumps({"outputs": [str(p) for p in result.outputs], "summary": s}, indent=2))
        return 0
    print(f"model: {s['model']} {s['model_version']}")
    print(f"sequences used: {', '.join(f'{k} ({v})' for k, v in s['sequences_used'].items()) or 'none'}")
    if s.get("missing"):
        print(f"missing: {', '.join(s['missing'])}")
    if "not_run" in s:
        print(s["not_run"])
    for label, ml in s.get("volumes_ml", {}).items():
        print(f"{label:>18}: {ml:8.2f} mL")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()))
    for p in result.outputs:
        print(f"wrote {p}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``infer`` sub-command."""
    p = subparsers.add_parser("infer", help="segment brain tumours in one DICOM study offline; writes SEG + SR",
                              description="Identify sequences, run a model bundle and write DICOM-SEG + TID 1500 SR. No network.")
    p.add_argument("dicom_dir", help="folder with the DICOM files of one study")
    p.add_argument("--out", required=True, help="output folder for seg.dcm and sr.dcm")
    p.add_argument("--model", default="brain-tumour-demo", help="bundle name or folder (default: brain-tumour-demo)")
    p.add_argument("--models-dir", default=None, help="extra folder with bundles")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the network runs")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: the bundle's)")
    p.add_argument("--headers-only", action="store_true", help="identify sequences from headers only")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run)
