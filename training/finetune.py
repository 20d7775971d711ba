"""Supervised fine-tuning of a tumour segmenter, from scratch or from an encoder checkpoint.

``mrinode train finetune --config FILE [--max-steps N] [--resume]`` reads a TOML config
(see ``training/configs/finetune-*.toml``), trains with sequence dropout, writes
checkpoints (``<out_dir>/checkpoint.pt``) and TensorBoard logs (``<out_dir>/tb``), validates
on held-out subjects and exports a bundle (weights + card with metrics, training config and
the manifest's SHA-256).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.ft_config import FinetuneConfig, load_finetune_config
from training.manifest import Manifest, ManifestError, build_manifest, load_manifest, write_synth_subjects
from training.regions import region_scores

__all__ = ["export_checkpoint", "gather_manifest", "main", "train", "validate"]

log = logging.getLogger(__name__)


def gather_manifest(cfg: FinetuneConfig) -> Manifest:
    """Build the training manifest: a manifest file, data folders, or in-memory synthetic subjects written once."""
    if cfg.manifest:
        return load_manifest(cfg.manifest)
    subjects = []
    dirs: list[str | Path] = list(cfg.data_dirs)
    if cfg.synth:
        dirs.append(write_synth_subjects(cfg.synth, Path(cfg.out_dir) / "synth"))
    for d in dirs:
        subjects += build_manifest(d, cfg.layout).subjects
    if not subjects:
        raise ManifestError("the fine-tuning config names no data: set data.manifest, data.dirs or data.synth.")
    return Manifest(subjects, cfg.name, ";".join(str(d) for d in dirs))


def validate(net: Any, items: list[dict[str, Any]], channels: list[str], roi: list[int],
             subsets: dict[str, list[str]], device: str = "cpu") -> dict[str, float]:
    """Mean Dice per region and channel subset on preprocessed (model-grid) items."""
    import torch
    from monai.inferers import sliding_window_inference

    net.eval()
    sums: dict[str, list[float]] = {}
    with torch.inference_mode():
        for item in items:
            ref = np.asarray(item["label"])[0].astype(np.int16)
            for sname, keep in subsets.items():
                x = torch.as_tensor(np.asarray(item["image"])).clone()
                present = np.asarray(item["present"]).copy()
                for c, ch in enumerate(channels):
                    if ch not in keep:
                        x[c] = 0
                        present[c] = False
                if not present.any():
                    continue
                logits = sliding_window_inference(x[None].to(device), roi, 1, net, overlap=0.25)
                assert isinstance(logits, torch.Tensor)
                pred = torch.argmax(logits[0], 0).cpu().numpy()
                for k, v in region_scores(pred, ref).items():
                    sums.setdefault(f"{sname}/{k}", []).append(v)
    net.train()
    return {k: float(np.mean(v)) for k, v in sums.items()}


def train(cfg: FinetuneConfig, resume: bool = False, max_steps: int | None = None) -> dict[str, Any]:
    """Fine-tune and export a bundle.

    Returns
    -------
    dict
        ``losses`` (per step), ``steps``, ``metrics`` (validation), ``bundle`` (folder or None).
    """
    import torch
    from monai.data import DataLoader, list_data_collate
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from models.segmenter import build_segmenter
    from training.datasets import make_dataset, negative_items, subject_items, train_transforms
    from training.export import export_bundle

    torch.set_num_threads(cfg.threads)
    set_determinism(cfg.seed)
    steps_total = int(max_steps if max_steps is not None else cfg.max_steps)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = gather_manifest(cfg)
    manifest.save(out / "manifest.json")
    ids = [s.id for s in manifest.subjects]
    n_val = min(cfg.val_subjects, max(0, len(ids) - 1))
    train_m, val_m = manifest.split(ids[len(ids) - n_val:] if n_val else [])
    log.info("fine-tuning on %d subjects, validating on %d", len(train_m.subjects), len(val_m.subjects))
    items = subject_items(train_m, cfg.channels)
    if cfg.real_negatives:
        from training.healthy import real_head_paths

        heads = real_head_paths(split=cfg.real_negatives)
        items += negative_items(heads, cfg.channels, cfg.real_negative_repeats)
        log.info("adding %d real healthy heads (split %r) x %d as all-background subjects", len(heads),
                 cfg.real_negatives, cfg.real_negative_repeats)
    hard_fraction = 0.0
    if cfg.hard_negatives:
        from training.hard_negatives import mine

        hn = cfg.hard_negatives
        masks = mine(hn["bundle"], items, cfg.channels, hn["subsets"], out / "hard-negatives", hn["shift_average"])
        for item in items:
            if str(item["id"]) in masks:
                item["hard_negatives"] = masks[str(item["id"])]
        hard_fraction = float(hn["fraction"])
    dr = cfg.domain_randomisation
    train_ds = make_dataset(items, cfg.channels, cfg.spacing_mm,
                            train_transforms(cfg.roi_size, cfg.sequence_dropout, cfg.samples_per_subject,
                                             cfg.pos_neg, cfg.intensity_augment, cfg.sequence_dropout_weights,
                                             domain_randomisation=dr, cached_indices=True,
                                             silent_subsets=cfg.silent_subsets),
                            normalization=cfg.normalize, raw=dr is not None, crop_indices_roi=cfg.roi_size,
                            hard_fraction=hard_fraction, bias_channels=cfg.bias_correction_channels,
                            gm_maps=bool(dr and float(dr.get("gm_gain_prob", 0.0)) > 0))
    val_ds = (make_dataset(subject_items(val_m, cfg.channels), cfg.channels, cfg.spacing_mm,
                           normalization=cfg.normalize, bias_channels=cfg.bias_correction_channels)
              if n_val else None)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, num_workers=0, collate_fn=list_data_collate)

    net = build_segmenter(cfg.network)
    if cfg.init_weights:
        net.load_state_dict(load_init_weights(Path(cfg.init_weights)))
        log.info("warm start from %s", cfg.init_weights)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # The schedule follows the config's step count; --max-steps only stops earlier (or later, at the final rate).
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(cfg.max_steps, 2), pct_start=0.05)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=1e-5, smooth_dr=1e-5)
    step, losses = 0, []
    ckpt_path = out / "checkpoint.pt"
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume was given but {ckpt_path} does not exist.")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, losses = int(state["step"]), list(state["losses"])
        log.info("resumed from %s at step %d", ckpt_path, step)
    writer = SummaryWriter(str(out / "tb"))
    net.train()
    metrics: dict[str, float] = {}
    history: dict[int, dict[str, float]] = {}  # validation metrics per step, for the plots
    # The bar on a terminal; elsewhere (a log file, CI) the "step n/N loss" lines every log_every steps.
    bar = tqdm(total=steps_total, initial=step, desc="finetune", unit="step", disable=not sys.stderr.isatty())
    t0 = time.perf_counter()
    while step < steps_total:
        for batch in loader:
            if step >= steps_total:
                break
            x, y = batch["image"].as_tensor(), batch["label"].as_tensor().long()
            loss = loss_fn(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched.last_epoch + 1 < sched.total_steps:
                sched.step()
            step += 1
            losses.append(float(loss.item()))
            writer.add_scalar("loss/train", losses[-1], step)
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step % cfg.log_every == 0:
                log.info("step %d/%d loss %.4f (%.1f s)", step, steps_total, losses[-1], time.perf_counter() - t0)
            if step % cfg.checkpoint_every == 0 or step == steps_total:
                _save_checkpoint(ckpt_path, net, opt, sched, step, losses)
            if val_ds is not None and cfg.val_every and step % cfg.val_every == 0 and step < steps_total:
                metrics = validate(net, list(val_ds), cfg.channels, cfg.inference_roi_size, cfg.val_subsets)
                for k, v in metrics.items():
                    writer.add_scalar(f"val/{k}", v, step)
                history[step] = dict(metrics)
                log.info("step %d validation %s", step, _fmt(metrics))
    bar.close()
    if val_ds is not None:
        metrics = validate(net, list(val_ds), cfg.channels, cfg.inference_roi_size, cfg.val_subsets)
        for k, v in metrics.items():
            writer.add_scalar(f"val/{k}", v, step)
        history[step] = dict(metrics)
        log.info("final validation %s", _fmt(metrics))
    writer.close()
    from training.plots import write_training_plots

    plots = write_training_plots(out / "plots", losses, history)
    log.info("plots: %s (TensorBoard logs: %s)", ", ".join(str(p) for p in plots) or "none", out / "tb")
    bundle_dir = None
    if cfg.bundle_out:
        bundle_dir = export_bundle(cfg, net, manifest, metrics, step, losses)
    return {"losses": losses, "steps": step, "metrics": metrics, "bundle": bundle_dir, "plots": plots}


def export_checkpoint(cfg: FinetuneConfig) -> dict[str, Any]:
    """Export the bundle from ``<out_dir>/checkpoint.pt`` without loading data or training.

    For a run stopped before its last step: the bundle records the checkpoint's step count
    and no validation metrics (run ``mrinode train evaluate`` on it).

    Raises
    ------
    FileNotFoundError
        If the run has no checkpoint or no saved manifest.
    ValueError
        If the config names no ``[bundle] out``.
    """
    import torch

    from models.segmenter import build_segmenter
    from training.export import export_bundle

    out = Path(cfg.out_dir)
    ckpt_path, manifest_path = out / "checkpoint.pt", out / "manifest.json"
    for p in (ckpt_path, manifest_path):
        if not p.is_file():
            raise FileNotFoundError(f"--export-only needs {p}, written by a fine-tuning run of this config.")
    if not cfg.bundle_out:
        raise ValueError("--export-only: the config's [bundle] out is empty, so there is nowhere to export.")
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    net = build_segmenter(cfg.network)
    net.load_state_dict(state["model"])
    step, losses = int(state["step"]), list(state["losses"])
    bundle = export_bundle(cfg, net, load_manifest(manifest_path), {}, step, losses)
    return {"losses": losses, "steps": step, "metrics": {}, "bundle": bundle}


def load_init_weights(path: Path) -> dict[str, Any]:
    """Read a whole-network state dict from a ``checkpoint.pt`` or a bundle folder.

    Raises
    ------
    FileNotFoundError
        If ``path`` is neither a checkpoint file nor a folder with ``weights.safetensors``.
    """
    import torch

    if path.is_dir() and (path / "weights.safetensors").is_file():
        from safetensors.torch import load_file

        return {k: v.float() for k, v in load_file(str(path / "weights.safetensors")).items()}
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)
        model: dict[str, Any] = state["model"] if isinstance(state, dict) and "model" in state else state
        return model
    raise FileNotFoundError(f"[train] init_weights {path} is neither a checkpoint file nor a bundle folder.")


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items()))


def _save_checkpoint(path: Path, net: Any, opt: Any, sched: Any, step: int, losses: list[float]) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": step, "losses": losses}, tmp)
    tmp.replace(path)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``mrinode train finetune`` (``config``, ``max_steps``, ``resume``)."""
    try:
        cfg = load_finetune_config(args.config)
        if getattr(args, "export_only", False):
            result = export_checkpoint(cfg)
        else:
            result = train(cfg, resume=bool(getattr(args, "resume", False)), max_steps=getattr(args, "max_steps", None))
    except (ValueError, FileNotFoundError) as exc:
        print(f"mrinode train finetune: {exc}", file=sys.stderr)
        return 2
    print(f"fine-tuned for {result['steps']} steps; final loss {result['losses'][-1]:.4f}" if result["losses"] else "no steps run")
    if result["metrics"]:
        print("validation: " + _fmt(result["metrics"]))
    if result["bundle"]:
        print(f"bundle: {result['bundle']}")
    return 0
