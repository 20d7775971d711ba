"""The label-efficiency evidence: does pretraining help when labels are scarce?

``python -m training.pretrain.label_efficiency --config training/configs/label-efficiency.toml``

1. Writes synthetic subjects with the project's engine (``training.synth``): a labelled
   training pool, a held-out test set (seeds never used for training) and extra unlabelled
   subjects (healthy and tumour) that only pretraining sees.
2. Pretrains one encoder per objective on the unlabelled images (training pool images +
   extra subjects; ``swin_ssl`` in BrainSegFounder's two stages: extra subjects first, then
   the target pool).
3. Fine-tunes the same segmenter (same architecture, same steps) from each pretrained encoder
   and from scratch on 1 %, 10 % and 100 % of the labelled pool, and scores Dice WT/TC/ET and
   HD95 on the held-out set.
4. Writes ``label-efficiency.md`` and PNG plots under the report folder.

Every stage is cached under ``work_dir`` (subjects, encoders, ``results.json``), so a run
that was stopped continues where it was, and ``--report-only`` redraws the report from the
results so far.

Config tables: ``[data]`` (``work_dir``, ``sequences``, ``voxel_mm``, ``train_subjects``,
``test_subjects``, ``unlabelled_subjects``, ``seed``), ``[encoder]`` (registry config),
``[pretrain]`` (``objectives``, ``steps``, ``batch_size``, ``patch``, ``lr``, ``threads``,
``options.<objective>``), ``[finetune]`` (``fractions``, ``steps``, ``lr``, ``batch_size``,
``roi``, ``repeats``, ``sequence_dropout``, ``norm`` — the decoder's; ``batch`` when the
crop is so small that the deepest map is one voxel), ``[report]`` (``dir``; ``notes``: markdown appended
to the report).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["label_counts", "main", "run"]

log = logging.getLogger(__name__)


def label_counts(pool: int, fractions: list[float]) -> dict[float, int]:
    """Number of labelled subjects per fraction: ``max(1, round(f * pool))``.

    Parameters
    ----------
    pool : int
        Size of the labelled training pool.
    fractions : list of float
        Label fractions in ``(0, 1]``.

    Returns
    -------
    dict
        Fraction -> subject count.

    Raises
    ------
    ValueError
        If a fraction is outside ``(0, 1]``.
    """
    out = {}
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"label fraction {f} is outside (0, 1].")
        out[f] = max(1, min(pool, round(f * pool)))
    return out


def _write_subjects(folder: Path, seeds: range, voxel_mm: float, sequences: list[str], tumour: bool | None) -> list[str]:
    import importlib

    synth = importlib.import_module("training.synth")
    from dicom_node.sequences import parse_sequence_label

    folder.mkdir(parents=True, exist_ok=True)
    done = folder / "subjects.json"
    if done.is_file():
        listed: list[str] = json.loads(done.read_text())
        return listed
    labels = [parse_sequence_label(s) for s in sequences]
    paths = []
    for seed in seeds:
        subject = synth.generate_subject(seed, voxel_mm=voxel_mm, sequences=labels, tumour=tumour)
        paths.append(str(synth.write_subject(subject, folder)))
    done.write_text(json.dumps(paths, indent=1) + "\n")
    return paths


def _pretrain(objective: str, cfg: dict[str, Any], work: Path, train_dirs: list[str], extra_dirs: list[str]) -> Path:
    from training.pretrain.config import parse_config
    from training.pretrain.data import collect_subjects  # noqa: F401  (validates sources early)
    from training.pretrain.run import train

    out = work / "encoders" / objective
    if (out / "encoder" / "encoder.json").is_file():
        return out / "encoder"
    pre, data = cfg["pretrain"], cfg["data"]
    steps = int(pre["steps"])
    data_table = {
        "sources": train_dirs + extra_dirs,
        "sequences": data["sequences"],
        "voxel_mm": float(data["voxel_mm"]),
        "patch": pre.get("patch", [32, 32, 32]),
        "batch_size": int(pre.get("batch_size", 2)),
    }
    raw: dict[str, Any] = {
        "objective": objective,
        "seed": int(data.get("seed", 0)),
        "encoder": dict(cfg["encoder"]),
        "options": dict(pre.get("options", {}).get(objective, {})),
        "data": data_table,
        "optim": {"lr": float(pre.get("lr", 1e-3)), "warmup_steps": max(1, steps // 20), "max_steps": steps},
        "run": {"out_dir": str(out), "threads": int(pre.get("threads", 2)), "log_every": 10, "checkpoint_every": 100},
    }
    if objective == "swin_ssl":  # BrainSegFounder: general data first, then the target data
        raw["stages"] = [
            {"name": "general", "steps": steps // 2, "data": {"sources": extra_dirs}},
            {"name": "target", "steps": steps - steps // 2, "data": {"sources": train_dirs}},
        ]
    result = train(parse_config(raw, f"label-efficiency pretrain {objective}"), resume=(out / "checkpoint.pt").is_file())
    return Path(result["encoder"])


def run(config_path: str | Path, *, report_only: bool = False) -> Path:
    """Run (or continue) the evidence and write the report.

    Parameters
    ----------
    config_path : str or Path
        The TOML config.
    report_only : bool
        Only redraw the report from ``results.json``.

    Returns
    -------
    Path
        The markdown report.
    """
    import torch

    from training.pretrain.downstream import evaluate_segmenter, finetune_segmenter, load_items
    from training.pretrain.report import write_report

    path = Path(config_path)
    if not path.is_file():
        raise ValueError(f"label-efficiency config {path} does not exist.")
    cfg = tomllib.loads(path.read_text())
    data, ft = cfg["data"], cfg["finetune"]
    work = Path(data["work_dir"])
    report_dir = Path(cfg.get("report", {}).get("dir", "docs/pretraining"))
    results_path = work / "results.json"
    results: list[dict[str, Any]] = json.loads(results_path.read_text()) if results_path.is_file() else []
    if report_only:
        return write_report(results, cfg, report_dir, work)
    torch.set_num_threads(int(cfg["pretrain"].get("threads", 2)))
    seq = list(data["sequences"])
    vox = float(data["voxel_mm"])
    base = int(data.get("seed", 0))
    n_train, n_test, n_extra = int(data["train_subjects"]), int(data["test_subjects"]), int(data["unlabelled_subjects"])
    train_dirs = _write_subjects(work / "subjects" / "train", range(base, base + n_train), vox, seq, True)
    test_dirs = _write_subjects(work / "subjects" / "test", range(base + 10_000, base + 10_000 + n_test), vox, seq, True)
    extra_dirs = _write_subjects(work / "subjects" / "unlabelled", range(base + 20_000, base + 20_000 + n_extra), vox, seq, None)
    train_items, test_items = load_items(train_dirs, seq), load_items(test_dirs, seq)

    encoders: dict[str, Path | None] = {"scratch": None}
    for objective in cfg["pretrain"]["objectives"]:
        started = time.perf_counter()
        encoders[objective] = _pretrain(objective, cfg, work, train_dirs, extra_dirs)
        log.info("pretrained %s in %.0f s", objective, time.perf_counter() - started)

    counts = label_counts(len(train_items), [float(f) for f in ft["fractions"]])
    roi = [int(r) for r in ft.get("roi", [32, 32, 32])]
    for repeat in range(int(ft.get("repeats", 1))):
        for fraction, k in counts.items():
            for init, enc in encoders.items():
                if any(r["init"] == init and r["fraction"] == fraction and r["repeat"] == repeat for r in results):
                    continue
                seg_cfg: dict[str, Any] = {
                    "encoder": dict(cfg["encoder"], in_channels=len(seq)),
                    "num_classes": 4,
                    "norm": str(ft.get("norm", "instance")),
                }
                if enc is not None:
                    seg_cfg["encoder_checkpoint"] = str(enc)
                # the labelled subset is the same for every init: the first k of a per-repeat shuffle
                order = torch.randperm(len(train_items), generator=torch.Generator().manual_seed(base + repeat)).tolist()
                subset = [train_items[i] for i in order[:k]]
                net, info = finetune_segmenter(
                    seg_cfg, subset, seq, spacing_mm=vox, roi=roi, steps=int(ft["steps"]), lr=float(ft.get("lr", 1e-3)),
                    batch_size=int(ft.get("batch_size", 2)), sequence_dropout=float(ft.get("sequence_dropout", 0.0)),
                    seed=base + repeat,
                )
                metrics = evaluate_segmenter(net, test_items, seq, spacing_mm=vox, roi=roi)
                row = {"init": init, "fraction": fraction, "labelled": k, "repeat": repeat, **metrics,
                       "finetune_seconds": info["seconds"], "final_loss": info["losses"][-1]}
                results.append(row)
                results_path.write_text(json.dumps(results, indent=1) + "\n")
                log.info("label efficiency %s @ %s (%d subjects): Dice WT %.3f", init, fraction, k, metrics["dice_WT"])
    return write_report(results, cfg, report_dir, work)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns an exit code."""
    parser = argparse.ArgumentParser(description="Label-efficiency evidence for the pretraining objectives.")
    parser.add_argument("--config", required=True, help="label-efficiency TOML config")
    parser.add_argument("--report-only", action="store_true", help="redraw the report from results.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = run(args.config, report_only=args.report_only)
    except KeyError as exc:
        print(f"label efficiency: the config lacks the key {exc}.", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"label efficiency: {exc}", file=sys.stderr)
        return 2
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
