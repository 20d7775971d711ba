"""``mrinode models list|check|rollback``: the installed model bundles, native and MONAI, a one-study trial
run, and rolling a registry's promoted version back."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from models.bundle import Card

__all__ = ["register", "synthetic_study"]


def _search(args: argparse.Namespace) -> list[str | Path] | None:
    return [args.models_dir] if args.models_dir else None


def _label_json(card: Card) -> list[dict[str, Any]]:
    return [{"value": lab.value, "name": lab.name, "category": list(lab.category), "type": list(lab.type),
             "colour": list(lab.colour)} for lab in card.labels]


def _label_text(card: Card) -> str:
    return "; ".join(f"{lab.value} {lab.name} ({lab.type[1]} {lab.type[0]}, #{''.join(f'{c:02x}' for c in lab.colour)})"
                     for lab in card.labels)


def _list(args: argparse.Namespace) -> int:
    from models.registry import invalid_bundles, list_models

    refs = list_models(_search(args))
    bad = invalid_bundles(_search(args))
    if args.json:
        print(json.dumps({
            "models": [{"name": r.name, "kind": r.kind, "version": r.card.version, "task": r.card.task,
                        "path": str(r.path), "channels": r.card.channels,
                        "required_sequences": r.card.required_sequences,
                        "optional_sequences": r.card.optional_sequences, "labels": _label_json(r.card),
                        "intended_use": r.card.intended_use} for r in refs],
            "invalid": [{"path": str(p), "error": why} for p, why in bad],
        }, indent=2))
        return 1 if bad else 0
    if not refs:
        print("no model bundles installed")
    for r in refs:
        c = r.card
        print(f"{c.name} {c.version}  [{r.kind}]  task={c.task}  {r.path}")
        print(f"    sequences: required {', '.join(c.required_sequences) or 'none'}; optional "
              f"{', '.join(c.optional_sequences) or 'none'}  (channels {', '.join(c.channels)})")
        print(f"    labels: {_label_text(c)}")
        print(f"    {c.intended_use}")
    for p, why in bad:
        print(f"INVALID {p}: {why}")
    return 1 if bad else 0


def synthetic_study(channels: list[str], shape: tuple[int, int, int] = (64, 64, 48),
                    voxel_mm: float = 3.0, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A small synthetic head for a trial run: an ellipsoid with a bright lesion, one volume per sequence.

    Not MRI physics (that is ``training.synth``): enough to push every input channel through a
    model once.

    Returns
    -------
    tuple
        ``({sequence: volume}, voxel-to-RAS affine)``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    centre = np.array(shape, dtype=np.float32)[:, None, None, None] / 2
    head = (((grid - centre) / (np.array(shape)[:, None, None, None] * 0.42)) ** 2).sum(0) <= 1.0
    lesion = np.sqrt(((grid - centre - 3) ** 2).sum(0)) <= 4
    # (background, head, lesion) intensities per sequence
    contrast = {"T1": (600.0, 450.0), "T1C": (600.0, 1200.0), "T2": (500.0, 1000.0), "FLAIR": (400.0, 1100.0)}
    images = {}
    for i, name in enumerate(channels):
        tissue, bright = contrast.get(name, (500.0, 900.0 + 50 * i))
        img = np.where(lesion, bright, np.where(head, tissue, 0.0)) + rng.normal(0, 15, shape)
        images[name] = np.abs(img).astype(np.float32)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) * voxel_mm / 2
    return images, affine


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from models.bundle import BundleError
    from models.engine import resolve_device
    from models.registry import check_bundle, load_model

    try:
        device = resolve_device(args.device)
        check_bundle(args.name, _search(args))
        ti = time.perf_counter()
        for module in ("monai.inferers", "monai.networks", "models.segmenter"):  # timed apart from the load
            importlib.import_module(module)

        imports = time.perf_counter() - ti
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        model = load_model(args.name, device=device, search_paths=_search(args))
        t1 = time.perf_counter()
    except (BundleError, ValueError) as exc:
        print(f"mrinode models check: {exc}", file=sys.stderr)
        return 2
    shape = (int(args.shape[0]), int(args.shape[1]), int(args.shape[2]))
    images, affine = synthetic_study(model.channels, shape, args.voxel_mm)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t2 = time.perf_counter()
    pred = model.predict(images, affine)
    t3 = time.perf_counter()
    counts = np.bincount(pred.labels.ravel(), minlength=len(model.card.labels) + 1)
    out: dict[str, Any] = {
        "name": model.card.name, "version": model.card.version, "kind": model.kind, "device": pred.device,
        "study": {"shape": list(shape), "voxel_mm": args.voxel_mm, "sequences": list(images)},
        "model_grid": list(pred.model_grid),
        "import_seconds": round(imports, 3), "load_seconds": round(t1 - t0, 3), "predict_seconds": round(t3 - t2, 3),
        "stage_seconds": {k: round(v, 3) for k, v in pred.seconds.items()},
        "rss_mb_before_load": round(rss0, 1), "rss_mb_after": round(_rss_mb(), 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "voxels_per_label": {str(lab.value): int(counts[lab.value]) for lab in model.card.labels
                             if lab.value < len(counts)},
    }
    if device == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{out['name']} {out['version']} [{out['kind']}] on {out['device']}: synthetic study "
          f"{'x'.join(map(str, shape))} at {args.voxel_mm} mm ({', '.join(images)}), model grid "
          f"{'x'.join(map(str, pred.model_grid))}")
    print(f"    imports {out['import_seconds']:.2f} s, load {out['load_seconds']:.2f} s, predict {out['predict_seconds']:.2f} s "
          f"({', '.join(f'{k} {v:.2f} s' for k, v in out['stage_seconds'].items())})")
    mem = f"    memory: RSS {out['rss_mb_before_load']:.0f} MB before load, {out['rss_mb_after']:.0f} MB after, " \
          f"peak {out['peak_rss_mb']:.0f} MB"
    if "peak_cuda_mb" in out:
        mem += f", CUDA peak {out['peak_cuda_mb']:.0f} MB"
    print(mem)
    per = out["voxels_per_label"]
    print("    voxels per label: " + ", ".join(f"{lab.name} {per.get(str(lab.value), 0)}" for lab in model.card.labels))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from models.registry import ModelRegistry, RegistryError

    registry = Path(args.registry)
    if not (registry / "registry.json").is_file():
        print(f"mrinode models rollback: {registry} is not a model registry (no registry.json).", file=sys.stderr)
        return 2
    reg = ModelRegistry(registry)
    try:
        before = reg.promoted(args.name)
        entry = reg.rollback(args.name)
    except RegistryError as exc:
        print(f"mrinode models rollback: {exc}", file=sys.stderr)
        return 2
    print(f"{args.name}: {before.version if before else '-'} -> {entry.version} (served from {reg.serving_path(args.name)})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``models`` sub-command (``models list``, ``models check NAME``, ``models rollback NAME``)."""
    p = subparsers.add_parser("models", help="list installed model bundles (native and MONAI), check one")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True
    q = sub.add_parser("list", help="list installed model bundles with their sequences and labels")
    q.add_argument("--models-dir", default=None, help="extra folder with bundles")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_list)
    c = sub.add_parser("check", help="load a bundle and run it once on a small synthetic study (seconds, memory)")
    c.add_argument("name", help="bundle name or folder")
    c.add_argument("--models-dir", default=None, help="extra folder with bundles")
    c.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")
    c.add_argument("--shape", nargs=3, type=int, default=[64, 64, 48], metavar=("I", "J", "K"),
                   help="synthetic study voxels (default: 64 64 48)")
    c.add_argument("--voxel-mm", type=float, default=3.0, help="synthetic study voxel size (default: 3)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=_check)
    r = sub.add_parser("rollback", help="promote again the version of a registry model promoted before the current one")
    r.add_argument("name", help="model name in the registry")
    r.add_argument("--registry", default="var/registry", help="registry folder (default: var/registry)")
    r.set_defaults(func=_rollback)
