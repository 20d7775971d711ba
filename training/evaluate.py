"""``mrinode train evaluate --config FILE``: Dice and HD95 per region, per sequence subset, with a report.

Config (TOML)::

    bundle = "brain-tumour-demo"        # name or folder
    device = "cpu"                      # auto | cpu | cuda
    threads = 2
    [data]      manifest = "" | dirs = [...] | synth = {subjects = 10, seed = 9000, voxel_mm = 1.0}
    [evaluate]  subsets = {all = ["T1", "T1C", "T2", "FLAIR"], FLAIR = ["FLAIR"]}
                hd95 = true
                out_dir = "var/evaluate/<bundle>"   # report.md, metrics.json, dice.png
                healthy_templates = false  # also the MNI152 / Colin27 templates (averages, not acquisitions), T1 alone
                healthy_real = ""          # a split of the real-scan corpus (training/realdata/corpus.json) ("test"): real healthy
                                           # acquisitions, each sequence alone and all (training.healthy)
                healthy_synthetic = []     # [first, last] tumour-free synthetic seeds (default draw, 1 mm), each
                                           # sequence alone and all four
                healthy_synthetic_dir = "var/synth/healthy-test"   # where they are written once
                card_key = ""              # when set, the summary goes into the bundle card's metrics
                card_note = ""             # ... with this sentence on what the subjects were

Every subject goes through the inference engine exactly as the node runs it (its label
grid is the reference grid); subjects without tumour count in the Dice means (1 when
nothing is predicted, else 0) and their false-positive volume is reported separately.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from training.manifest import Manifest, ManifestError, build_manifest, load_manifest, write_synth_subjects
from training.regions import REGIONS, mask_scores, region_masks

__all__ = ["evaluate", "load_subject_arrays", "main", "record_in_card", "summarise", "write_report"]


def load_subject_arrays(subject: Any, channels: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Load a manifest subject's sequences onto its label grid: ``(images, labels, affine)``."""
    import nibabel as nib

    from models.preprocess import resample

    if not subject.labels:
        raise ManifestError(f"subject {subject.id} has no label map; evaluation needs one.")
    ref: Any = nib.load(subject.labels)
    labels = np.asarray(ref.dataobj).astype(np.int16)
    for src, dst in subject.label_map.items():
        labels[labels == int(src)] = int(dst)
    images = {}
    for name in channels:
        if name not in subject.sequences:
            continue
        img: Any = nib.load(subject.sequences[name].path)
        data = np.asarray(img.dataobj, dtype=np.float32)
        if data.shape != labels.shape or not np.allclose(img.affine, ref.affine, atol=1e-4):
            data = resample(data[None], img.affine, labels.shape, ref.affine)[0].numpy()
        images[name] = data
    return images, labels, np.asarray(ref.affine)


def evaluate(bundle: str, manifest: Manifest, subsets: dict[str, list[str]], device: str = "cpu",
             with_hd95: bool = True) -> dict[str, Any]:
    """Run the engine on every subject and subset; return per-subject rows and summaries."""
    from models.engine import get_engine

    engine = get_engine(bundle, device=device)
    rows: list[dict[str, Any]] = []
    for subject in manifest.subjects:
        images, labels, affine = load_subject_arrays(subject, engine.channels)
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        voxel_ml = float(np.prod(spacing)) / 1000.0
        true_masks = region_masks(labels)  # the same for every subset
        true_ml = {f"true_ml_{r}": float(m.sum()) * voxel_ml for r, m in true_masks.items()}
        for sname, keep in subsets.items():
            sub_images = {k: v for k, v in images.items() if k in keep}
            if not sub_images:
                continue
            t0 = time.perf_counter()
            pred = engine.predict(sub_images, affine)
            row: dict[str, Any] = {"subject": subject.id, "subset": sname, "seconds": time.perf_counter() - t0,
                                   "true_ml": float((labels > 0).sum()) * voxel_ml,
                                   "pred_ml": float((pred.labels > 0).sum()) * voxel_ml}
            pred_masks = region_masks(pred.labels)
            row.update(mask_scores(pred_masks, true_masks, spacing if with_hd95 else None))
            row.update(true_ml)
            row.update({f"pred_ml_{r}": float(m.sum()) * voxel_ml for r, m in pred_masks.items()})
            rows.append(row)
    return {"rows": rows, "summary": summarise(rows, subsets)}


def summarise(rows: list[dict[str, Any]], subsets: Any) -> dict[str, dict[str, float]]:
    """Per subset: mean and SD of each region's Dice over subjects with a tumour, HD95 medians, and more.

    ``dice_<region>`` follows BraTS: a region absent from a subject's truth scores 1 when none is
    found and 0 when any voxel is, so one speck of false enhancement moves a ten-subject mean by
    0.1. ``dice_<region>_present`` is the mean over the subjects that have the region,
    ``<region>_absent`` how many do not and ``<region>_absent_max_pred_ml`` the most found there.

    Parameters
    ----------
    rows : list of dict
        :func:`evaluate`'s per-subject rows.
    subsets : iterable of str
        The subset names to summarise.

    Returns
    -------
    dict
        Subset name to its statistics.
    """
    summary: dict[str, dict[str, float]] = {}
    for sname in subsets:
        sel = [r for r in rows if r["subset"] == sname]
        tumour = [r for r in sel if r["true_ml"] > 0]
        free = [r for r in sel if r["true_ml"] == 0]
        stats: dict[str, float] = {"subjects": float(len(sel)), "with_tumour": float(len(tumour))}
        for region in REGIONS:
            vals = [r[f"dice_{region}"] for r in tumour]
            stats[f"dice_{region}"] = float(np.mean(vals)) if vals else float("nan")
            stats[f"dice_{region}_std"] = float(np.std(vals)) if vals else float("nan")
            # BraTS scores a region absent from the truth 1 or 0 (any voxel found); also over subjects that have it
            has = [r for r in tumour if r.get(f"true_ml_{region}", 1.0) > 0]
            stats[f"dice_{region}_present"] = float(np.mean([r[f"dice_{region}"] for r in has])) if has else float("nan")
            stats[f"{region}_absent"] = float(len(tumour) - len(has))
            stats[f"{region}_absent_max_pred_ml"] = float(max((r.get(f"pred_ml_{region}", 0.0) for r in tumour
                                                                if r.get(f"true_ml_{region}", 1.0) == 0), default=0.0))
            if any(f"hd95_{region}" in r for r in sel):
                hd = [r[f"hd95_{region}"] for r in tumour if np.isfinite(r.get(f"hd95_{region}", np.nan))]
                stats[f"hd95_{region}"] = float(np.median(hd)) if hd else float("nan")
        stats["tumour_free_max_pred_ml"] = float(max((r["pred_ml"] for r in free), default=0.0))
        stats["seconds_mean"] = float(np.mean([r["seconds"] for r in sel])) if sel else 0.0
        summary[sname] = stats
    return summary


def write_report(result: dict[str, Any], out_dir: Path, title: str) -> Path:
    """Write ``report.md``, ``metrics.json`` and ``dice.png`` (matplotlib, Agg) under ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    subsets = list(result["summary"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    pos: float = 0.0
    ticks: list[float] = []
    names: list[str] = []
    for region in REGIONS:
        for sname in subsets:
            vals = [r[f"dice_{region}"] for r in result["rows"] if r["subset"] == sname and r["true_ml"] > 0]
            if vals:
                ax.boxplot([vals], positions=[pos], widths=0.6)
            ticks.append(pos)
            names.append(f"{region}\n{sname}")
            pos += 1
        pos += 0.5
    ax.set_xticks(ticks, names, fontsize=7)
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_dir / "dice.png", dpi=100)
    plt.close(fig)
    lines = [f"# {title}", "", "Mean Dice (± sd) over subjects with a tumour; HD95 median in mm.", "",
             "| subset | subjects (with tumour) | Dice WT | Dice TC | Dice ET | HD95 WT | HD95 TC | HD95 ET "
             "| max predicted mL on tumour-free | s/subject |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for sname, s in result["summary"].items():
        dice_cells = " | ".join(f"{s[f'dice_{r}']:.3f} ± {s[f'dice_{r}_std']:.3f}" for r in REGIONS)
        hd_cells = " | ".join(f"{s.get(f'hd95_{r}', float('nan')):.1f}" for r in REGIONS)
        lines.append(f"| {sname} | {int(s['subjects'])} ({int(s['with_tumour'])}) | {dice_cells} | {hd_cells} "
                     f"| {s['tumour_free_max_pred_ml']:.2f} | {s['seconds_mean']:.1f} |")
    absent = [(sname, r, s) for sname, s in result["summary"].items() for r in REGIONS if s.get(f"{r}_absent")]
    if absent:
        lines += ["", "A region absent from a subject's truth scores Dice 1 when none is found and 0 when any voxel is "
                  "(BraTS); over the subjects that have it: "
                  + "; ".join(f"{sname} {r} {s[f'dice_{r}_present']:.3f} ({int(s['with_tumour'] - s[f'{r}_absent'])} "
                              f"subjects; {int(s[f'{r}_absent'])} without it, at most {s[f'{r}_absent_max_pred_ml']:.2f} "
                              "mL found there)" for sname, r, s in absent) + "."]
    healthy = result.get("healthy_T1_only_ml", {})
    if healthy:
        lines += ["", "Real healthy brains, T1 alone (predicted tumour, mL; acceptance < 1 mL): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in healthy.items()) + "."]
    for key, title in (("healthy_real", "Real healthy acquisitions"), ("tumour_free_synthetic", "Tumour-free synthetic subjects")):
        if result.get(key):
            lines += ["", f"{title} (predicted tumour, mL; acceptance < 1 mL): "
                      + ", ".join(f"{r['head']} {r['subset']} {r['ml']:.2f}" for r in result[key]) + "."]
    lines += ["", "![Dice per region and subset](dice.png)", "", "## Per subject", "",
              "| subject | subset | true mL | predicted mL | Dice WT | Dice TC | Dice ET |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['subject']} | {r['subset']} | {r['true_ml']:.1f} | {r['pred_ml']:.1f} | "
                     f"{r['dice_WT']:.3f} | {r['dice_TC']:.3f} | {r['dice_ET']:.3f} |")
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def record_in_card(bundle: str, key: str, result: dict[str, Any], note: str, command: str) -> Path:
    """Write an evaluation summary into the bundle card's ``metrics[key]`` (weights untouched).

    Returns
    -------
    Path
        The rewritten ``card.json``.
    """
    from models.bundle import load_bundle

    folder = Path(load_bundle(bundle).path)
    card_path = folder / "card.json"
    card = json.loads(card_path.read_text())
    entry: dict[str, Any] = {"subjects": note, "command": command}
    entry.update({k: {m: round(v, 4) for m, v in s.items()} for k, s in result["summary"].items()})
    if "healthy_T1_only_ml" in result:
        entry["healthy_templates_T1_only_ml"] = result["healthy_T1_only_ml"]
    card.setdefault("metrics", {})[key] = entry
    for name, what in (("healthy_real", "real acquisitions"), ("tumour_free_synthetic", "synthetic subjects")):
        if name in result:
            rows = result[name]
            card["metrics"][name] = {
                "what": f"{what}: {result.get(name + '_note', '')}".rstrip(": "),
                "acquisitions": "real" if name == "healthy_real" else "synthetic",
                "command": command,
                "max_ml": round(max((r["ml"] for r in rows), default=0.0), 3),
                "over_1ml": sum(int(r["ml"] >= 1.0) for r in rows),
                "ml": {f"{r['head']}/{r['subset']}": r["ml"] for r in rows},
            }
    tmp = card_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(card_path)
    return card_path


def _manifest_from(data: dict[str, Any], out_dir: Path) -> Manifest:
    if data.get("manifest"):
        return load_manifest(data["manifest"])
    subjects = []
    dirs: list[str | Path] = [str(d) for d in data.get("dirs", [])]
    if data.get("synth"):
        dirs.append(write_synth_subjects(dict(data["synth"]), out_dir / "synth"))
    for d in dirs:
        subjects += build_manifest(d, str(data.get("layout", "auto"))).subjects
    if not subjects:
        raise ManifestError("the evaluation config names no data: set data.manifest, data.dirs or data.synth.")
    return Manifest(subjects, "evaluation", ";".join(str(d) for d in dirs))


def main(args: argparse.Namespace) -> int:
    """Entry point of ``mrinode train evaluate``."""
    import torch

    try:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"evaluation config {path} does not exist.")
        raw = tomllib.loads(path.read_text())
        bundle = str(raw.get("bundle", "brain-tumour-demo"))
        torch.set_num_threads(int(raw.get("threads", 2)))
        ev = raw.get("evaluate", {})
        out_dir = Path(ev.get("out_dir", f"var/evaluate/{Path(bundle).name}"))
        manifest = _manifest_from(raw.get("data", {}), out_dir)
        subsets = {str(k): [str(x) for x in v] for k, v in
                   ev.get("subsets", {"all": ["T1", "T1C", "T2", "FLAIR"], "FLAIR": ["FLAIR"]}).items()}
        result = evaluate(bundle, manifest, subsets, device=str(raw.get("device", "cpu")),
                          with_hd95=bool(ev.get("hd95", True)))
        if ev.get("healthy_templates"):
            from models.engine import get_engine
            from training.healthy import healthy_volumes

            result["healthy_T1_only_ml"] = healthy_volumes(get_engine(bundle, device=str(raw.get("device", "cpu"))))
        if ev.get("healthy_real") or ev.get("healthy_synthetic"):
            from models.engine import get_engine
            from training.healthy import (
                false_tumour_table,
                real_head_paths,
                real_heads,
                synthetic_tissue,
                tumour_free_subjects,
            )
            from training.synth.subject import GENERATOR_VERSION

            engine = get_engine(bundle, device=str(raw.get("device", "cpu")))
            if ev.get("healthy_real"):
                split = str(ev["healthy_real"])
                result["healthy_real"] = false_tumour_table(engine, real_head_paths(split), "real")
                result["healthy_real_note"] = "; ".join(f"{h.id} ({h.note}; {h.package.split(':')[1]}, {h.licence})"
                                                        for h in real_heads(split))
            if ev.get("healthy_synthetic"):
                first, last = (int(v) for v in ev["healthy_synthetic"])
                folders = tumour_free_subjects(range(first, last + 1),
                                               str(ev.get("healthy_synthetic_dir", "var/synth/healthy-test")))
                heads = {f.name: {c: str(f / f"{c}.nii.gz") for c in engine.channels} for f in folders}
                result["tumour_free_synthetic"] = false_tumour_table(engine, heads, "synthetic",
                                                                     tissue=synthetic_tissue(folders))
                result["tumour_free_synthetic_note"] = (f"{len(folders)} tumour-free subjects, seeds {first}-{last}, "
                                                        f"default draw at 1 mm (generator {GENERATOR_VERSION}), never trained on")
        if ev.get("card_key"):
            card = record_in_card(bundle, str(ev["card_key"]), result, str(ev.get("card_note", "")),
                                  f"mrinode train evaluate --config {path}")
            print(f"card: {card}")
    except (ValueError, FileNotFoundError, tomllib.TOMLDecodeError) as exc:
        print(f"mrinode train evaluate: {exc}", file=sys.stderr)
        return 2
    report = write_report(result, out_dir, f"Evaluation of {bundle} on {len(manifest.subjects)} subjects")
    for name, ml in result.get("healthy_T1_only_ml", {}).items():
        print(f"healthy template {name}, T1 alone: {ml:.2f} mL predicted tumour")
    for key in ("healthy_real", "tumour_free_synthetic"):
        rows = result.get(key, [])
        if rows:
            worst = max(rows, key=lambda r: r["ml"])
            print(f"{key}: {len(rows)} inputs, max {worst['ml']:.2f} mL ({worst['head']} as {worst['subset']}), "
                  f"{sum(int(r['ml'] >= 1.0) for r in rows)} at or over 1 mL")
    for sname, s in result["summary"].items():
        print(f"{sname:>8}: Dice WT {s['dice_WT']:.3f}  TC {s['dice_TC']:.3f}  ET {s['dice_ET']:.3f} "
              f"(over subjects with ET: {s['dice_ET_present']:.3f})  "
              f"(tumour-free max {s['tumour_free_max_pred_ml']:.2f} mL)")
    print(f"report: {report}")
    return 0
