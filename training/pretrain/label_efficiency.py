"""The label-efficiency evidence: does pretraining help when labels are scarce?

``mrinode train evaluate --config training/configs/label-efficiency.toml [--report-only]``
(the CLI sends a config with a ``[label_efficiency]`` table here; bundle configs go to
:mod:`training.evaluate`). Also ``python -m training.pretrain.label_efficiency --config FILE``.

1. Writes synthetic subjects with the project's engine (``training.synth``): a labelled
   training pool, held-out test subjects and validation subjects (seeds never used for
   training), and extra unlabelled subjects (healthy and tumour) that only pretraining sees.
2. Pretrains one encoder per objective on the unlabelled images (training pool images +
   extra subjects; ``swin_ssl`` in BrainSegFounder's two stages: extra subjects first, then
   the target pool). 3D objectives train the ``[encoder]``, 2D ones (``dino2d``) the
   ``[encoder2d]``.
3. Fine-tunes the same segmenter (same architecture, same steps) from each pretrained encoder
   and from scratch (``scratch``: the 3D Swin segmenter; ``scratch2d``: the 2D slice
   segmenter) on 1 %, 10 % and 100 % of the labelled pool, and scores Dice WT/TC/ET and HD95
   on the test subjects, or on the validation subjects with ``split = "validation"`` (for
   choosing settings without looking at the test subjects).
4. Writes ``label-efficiency.md``, PNG plots and the result rows under the report folder.

Every stage is cached under ``work_dir`` (subjects, encoders with the settings they were
made with, result rows keyed by a digest of the settings), so a run that was stopped
continues where it was, and ``--report-only`` redraws the report from the results so far.

Config tables: ``[label_efficiency]`` (``split``: ``"test"`` or ``"validation"``),
``[data]`` (``work_dir``, ``sequences``, ``voxel_mm``, ``train_subjects``,
``test_subjects``, ``val_subjects``, ``unlabelled_subjects``, ``seed``), ``[encoder]`` and
``[encoder2d]`` (registry configs), ``[pretrain]`` (``objectives``, ``steps``,
``batch_size``, ``patch``, ``steps_2d``, ``batch_size_2d``, ``patch_2d``, ``lr``,
``threads``, ``options.<objective>``), ``[finetune]`` (``fractions``, ``steps``, ``lr``,
``batch_size``, ``roi``, ``repeats``, ``sequence_dropout``, ``encoder_lr_scale`` — the
pretrained encoder's learning rate relative to ``lr``; ``norm`` — the decoder's; ``batch``
when the crop is so small that the deepest map is one voxel), ``[finetune2d]`` (overrides
for the 2D arm: ``roi`` (2 values), ``batch_size``, ``mode`` — ``full``, ``frozen`` or
``lora`` for a pretrained encoder, ``width``, ``lora_rank``), ``[report]`` (``dir``;
``notes``: markdown appended to the report).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["baselines", "label_counts", "main", "run"]

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


def _fingerprint(obj: Any) -> str:
    """A short digest of a JSON-able settings object (cache keys of encoders and results)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _spatial_dims(objective: str) -> int:
    from training.pretrain.registry import objective_class

    return int(getattr(objective_class(objective), "spatial_dims", 3))


def _pretrain(objective: str, cfg: dict[str, Any], work: Path, train_dirs: list[str], extra_dirs: list[str]) -> Path:
    from training.pretrain.config import parse_config
    from training.pretrain.run import train

    out = work / "encoders" / objective
    pre, data = cfg["pretrain"], cfg["data"]
    two_d = _spatial_dims(objective) == 2
    steps = int(pre.get("steps_2d", pre["steps"])) if two_d else int(pre["steps"])
    patch = [*pre.get("patch_2d", [48, 48]), 1] if two_d else pre.get("patch", [32, 32, 32])
    data_table = {
        "sources": train_dirs + extra_dirs,
        "sequences": data["sequences"],
        "voxel_mm": float(data["voxel_mm"]),
        "patch": patch,
        "batch_size": int(pre.get("batch_size_2d", 16)) if two_d else int(pre.get("batch_size", 2)),
    }
    raw: dict[str, Any] = {
        "objective": objective,
        "seed": int(data.get("seed", 0)),
        "encoder": dict(cfg["encoder2d"] if two_d else cfg["encoder"]),
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
    settings = {k: v for k, v in raw.items() if k != "run"}
    marker = out / "settings.json"
    if (out / "encoder" / "encoder.json").is_file():
        if not marker.is_file():  # made before settings were recorded, by this same code path
            log.info("adopting the pretrained %s encoder in %s (no settings recorded)", objective, out)
            marker.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
        elif _fingerprint(json.loads(marker.read_text())) != _fingerprint(settings):
            raise ValueError(
                f"the {objective} encoder in {out} was pretrained with other settings than the config's; "
                "use another [data] work_dir or remove that folder."
            )
        return out / "encoder"
    result = train(parse_config(raw, f"label-efficiency pretrain {objective}"), resume=(out / "checkpoint.pt").is_file())
    marker.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
    return Path(result["encoder"])


def _arm_config(init: str, objective: str | None, enc: Path | None, cfg: dict[str, Any], n_seq: int) -> dict[str, Any]:
    """Segmenter config, crop, batch, steps and learning rates of one fine-tuning arm."""
    ft = cfg["finetune"]
    two_d = init == "scratch2d" or (objective is not None and _spatial_dims(objective) == 2)
    if two_d:
        ft2 = {**ft, **cfg.get("finetune2d", {})}
        seg: dict[str, Any] = {
            "encoder": dict(cfg["encoder2d"], in_channels=n_seq),
            "num_classes": 4,
            # from scratch every weight must train; a pretrained encoder may stay frozen or get LoRA
            "slice": {"mode": str(ft2.get("mode", "full")) if enc is not None else "full",
                      "width": int(ft2.get("width", 64)), "lora_rank": int(ft2.get("lora_rank", 4))},
        }
        roi = [*[int(r) for r in ft2.get("roi", [48, 48])][:2], 1]
    else:
        ft2 = dict(ft)
        seg = {"encoder": dict(cfg["encoder"], in_channels=n_seq), "num_classes": 4, "norm": str(ft.get("norm", "instance"))}
        roi = [int(r) for r in ft.get("roi", [32, 32, 32])]
    if enc is not None:
        seg["encoder_checkpoint"] = str(enc)
    return {
        "seg": seg, "roi": roi, "steps": int(ft2["steps"]), "lr": float(ft2.get("lr", 1e-3)),
        "batch_size": int(ft2.get("batch_size", 2)), "sequence_dropout": float(ft2.get("sequence_dropout", 0.0)),
        "encoder_lr_scale": float(ft2.get("encoder_lr_scale", 1.0)),
    }


def baselines(objectives: list[str]) -> dict[str, str]:
    """The from-scratch arm each objective is compared with: the same architecture untrained.

    Parameters
    ----------
    objectives : list of str
        Pretraining objectives.

    Returns
    -------
    dict
        Objective -> ``"scratch"`` (3D Swin segmenter) or ``"scratch2d"`` (2D slice segmenter).
    """
    return {o: "scratch2d" if _spatial_dims(o) == 2 else "scratch" for o in objectives}


def run(config_path: str | Path, *, report_only: bool = False) -> Path:
    """Run (or continue) the evidence and write the report.

    Parameters
    ----------
    config_path : str or Path
        The TOML config.
    report_only : bool
        Only redraw the report from the results file.

    Returns
    -------
    Path
        The markdown report.

    Raises
    ------
    ValueError
        If the config is missing or invalid (the message names the file or key).
    """
    import torch

    from training.pretrain.downstream import evaluate_segmenter, finetune_segmenter, load_items
    from training.pretrain.report import write_report

    path = Path(config_path)
    if not path.is_file():
        raise ValueError(f"label-efficiency config {path} does not exist.")
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"label-efficiency config {path} is not valid TOML ({exc}).") from exc
    data, ft = cfg["data"], cfg["finetune"]
    split = str(cfg.get("label_efficiency", {}).get("split", "test"))
    if split not in ("test", "validation"):
        raise ValueError(f"label-efficiency config {path}: [label_efficiency] split must be 'test' or 'validation', not {split!r}.")
    work = Path(data["work_dir"])
    objectives = [str(o) for o in cfg["pretrain"]["objectives"]]
    base_of = baselines(objectives)
    if any(_spatial_dims(o) == 2 for o in objectives) and "encoder2d" not in cfg:
        raise ValueError(f"label-efficiency config {path}: a 2D objective needs an [encoder2d] table.")
    if split == "test":
        report_dir = Path(cfg.get("report", {}).get("dir", "docs/pretraining"))
        results_path = work / "results.json"
    else:
        report_dir, results_path = work / "validation-report", work / "results-validation.json"
    # the digest leaves out the repeat count (rows carry their repeat): raising it adds rows, keeps the others
    keyed = {k: cfg.get(k) for k in ("data", "encoder", "encoder2d", "pretrain", "finetune2d")}
    keyed["finetune"] = {k: v for k, v in ft.items() if k != "repeats"}
    settings = _fingerprint(keyed | {"split": split})
    # rows made with other settings stay in the file (another config may share the work folder) but are not used
    every_row: list[dict[str, Any]] = json.loads(results_path.read_text()) if results_path.is_file() else []
    results = [r for r in every_row if r.get("settings") == settings]
    if report_only:
        return write_report(results, cfg, report_dir, work, base_of)
    torch.set_num_threads(int(cfg["pretrain"].get("threads", 2)))
    seq = list(data["sequences"])
    vox = float(data["voxel_mm"])
    base = int(data.get("seed", 0))
    n_train, n_test, n_extra = int(data["train_subjects"]), int(data["test_subjects"]), int(data["unlabelled_subjects"])
    train_dirs = _write_subjects(work / "subjects" / "train", range(base, base + n_train), vox, seq, True)
    extra_dirs = _write_subjects(work / "subjects" / "unlabelled", range(base + 20_000, base + 20_000 + n_extra), vox, seq, None)
    if split == "test":
        eval_dirs = _write_subjects(work / "subjects" / "test", range(base + 10_000, base + 10_000 + n_test), vox, seq, True)
    else:
        n_val = int(data.get("val_subjects", 0))
        if n_val < 1:
            raise ValueError(f"label-efficiency config {path}: split 'validation' needs [data] val_subjects >= 1.")
        eval_dirs = _write_subjects(work / "subjects" / "validation", range(base + 30_000, base + 30_000 + n_val), vox, seq, True)
    train_items, eval_items = load_items(train_dirs, seq), load_items(eval_dirs, seq)

    encoders: dict[str, tuple[str | None, Path | None]] = {}
    for objective in objectives:
        if base_of[objective] not in encoders:
            encoders[base_of[objective]] = (None, None)
        started = time.perf_counter()
        encoders[objective] = (objective, _pretrain(objective, cfg, work, train_dirs, extra_dirs))
        log.info("pretrained %s in %.0f s", objective, time.perf_counter() - started)
    encoders = dict(sorted(encoders.items(), key=lambda kv: (kv[0] != "scratch", kv[0] != "scratch2d")))

    counts = label_counts(len(train_items), [float(f) for f in ft["fractions"]])
    for repeat in range(int(ft.get("repeats", 1))):
        # the labelled subset is the same for every init: the first k of a per-repeat shuffle
        order = torch.randperm(len(train_items), generator=torch.Generator().manual_seed(base + repeat)).tolist()
        for fraction, k in counts.items():
            for init, (pretrained_by, enc) in encoders.items():
                if any(r["init"] == init and r["fraction"] == fraction and r["repeat"] == repeat for r in results):
                    continue
                arm = _arm_config(init, pretrained_by, enc, cfg, len(seq))
                net, info = finetune_segmenter(
                    arm["seg"], [train_items[i] for i in order[:k]], seq, spacing_mm=vox, roi=arm["roi"],
                    steps=arm["steps"], lr=arm["lr"], batch_size=arm["batch_size"],
                    sequence_dropout=arm["sequence_dropout"], seed=base + repeat, encoder_lr_scale=arm["encoder_lr_scale"],
                )
                metrics = evaluate_segmenter(net, eval_items, seq, spacing_mm=vox, roi=arm["roi"])
                row = {"init": init, "fraction": fraction, "labelled": k, "repeat": repeat, "split": split, **metrics,
                       "finetune_seconds": info["seconds"], "final_loss": info["losses"][-1], "settings": settings}
                results.append(row)
                every_row.append(row)
                results_path.write_text(json.dumps(every_row, indent=1) + "\n")
                log.info("label efficiency %s @ %s (%d subjects, %s): Dice WT %.3f", init, fraction, k, split,
                         metrics["dice_WT"])
    return write_report(results, cfg, report_dir, work, base_of)


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Entry point of ``mrinode train evaluate`` for a label-efficiency config; returns an exit code.

    Parameters
    ----------
    args : argparse.Namespace or list of str, optional
        The CLI's namespace (``config``, ``report_only``) or an argument list
        (``--config FILE [--report-only]``).
    """
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(description="Label-efficiency evidence for the pretraining objectives.")
        parser.add_argument("--config", required=True, help="label-efficiency TOML config")
        parser.add_argument("--report-only", action="store_true", help="redraw the report from the results so far")
        args = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = run(args.config, report_only=bool(getattr(args, "report_only", False)))
    except KeyError as exc:
        print(f"label efficiency: the config {args.config} lacks the key {exc}.", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"label efficiency: {exc}", file=sys.stderr)
        return 2
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
