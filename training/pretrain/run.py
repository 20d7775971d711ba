"""``mrinode train pretrain --config FILE [--max-steps N] [--resume]``: the pretraining loop.

One process, or several under ``torchrun --nproc-per-node N`` (DistributedDataParallel;
NCCL on GPUs, gloo on CPU). Rank 0 shows a progress bar, writes TensorBoard scalars under
``<out_dir>/tb``, a step-by-step ``history.json``, ``checkpoint.pt`` every
``checkpoint_every`` steps (atomic), and at the end the encoder with
:func:`models.encoders.save_encoder` under ``<out_dir>/encoder`` — the folder that
``mrinode train finetune`` takes as its encoder checkpoint.

``--resume`` continues from ``<out_dir>/checkpoint.pt`` (weights, optimiser, schedule, step,
history). Crop positions after a resume are not the ones an uninterrupted run would draw.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from training.pretrain.config import OptimTable, PretrainConfig, Stage, load_config
from training.pretrain.data import PretrainDataset, collect_subjects
from training.pretrain.registry import Objective, build_objective

__all__ = ["main", "train"]

log = logging.getLogger(__name__)


def _distributed() -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun; return ``(rank, world, device)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend=backend)
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, device


def _loader(stage: Stage, objective: Objective, seed: int, rank: int, world: int) -> Iterator[dict[str, torch.Tensor]]:
    """Yield batches of ``stage``'s data forever (reshuffled each epoch)."""
    data = stage.data
    sources: list[Any] = list(data.sources)
    if data.synth:
        sources.append({"synth": data.synth})
    subjects = collect_subjects(sources, data.voxel_mm)
    dataset = PretrainDataset(
        subjects,
        data.sequences,
        data.patch,
        data.voxel_mm,
        slice_2d=objective.spatial_dims == 2,
        min_sequences=objective.min_sequences,
        seed=seed,
        rank=rank,
    )
    sampler: DistributedSampler[dict[str, torch.Tensor]] = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False
    )
    workers = data.workers
    loader = DataLoader(
        dataset,
        batch_size=data.batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _schedule(optim: OptimTable, total: int) -> Any:
    warm = optim.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, total - warm)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return factor


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: PretrainConfig, *, resume: bool = False, max_steps: int | None = None) -> dict[str, Any]:
    """Run (or continue) a pretraining run.

    Parameters
    ----------
    cfg : PretrainConfig
        From :func:`training.pretrain.config.load_config`.
    resume : bool
        Continue from ``<out_dir>/checkpoint.pt``.
    max_steps : int, optional
        Stop after this many steps in total (over all stages).

    Returns
    -------
    dict
        ``steps``, ``seconds``, ``encoder`` (folder, rank 0) and ``final_loss``.

    Raises
    ------
    ValueError
        If the data or config cannot be used, or ``resume`` finds no checkpoint.
    """
    from models.encoders import build_encoder, save_encoder

    if max_steps is not None:
        cfg.cap_steps(int(max_steps))
    total = cfg.total_steps
    rank, world, device = _distributed()
    torch.set_num_threads(cfg.run.threads)
    out = Path(cfg.run.out_dir)
    ckpt_path = out / "checkpoint.pt"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    encoder = build_encoder(cfg.encoder)
    objective = build_objective(cfg.objective, encoder, cfg.options, int(cfg.encoder["in_channels"])).to(device)
    params = [p for p in objective.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(cfg.optim, total))
    step = 0
    history: list[dict[str, Any]] = []
    if resume:
        if not ckpt_path.is_file():
            raise ValueError(f"--resume: there is no checkpoint at {ckpt_path} to continue from.")
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        objective.load_state_dict(state["objective"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = int(state["step"]), list(state["history"])
    model: nn.Module = objective
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    torch.manual_seed(cfg.seed * 1000 + rank + step)  # augmentations differ per rank

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, disable=rank != 0, desc=f"pretrain {cfg.objective}", file=sys.stderr)
    started = time.perf_counter()
    begin = 0
    loss_value = float("nan")
    for stage in cfg.stages:
        end = begin + stage.steps
        if step >= end:
            begin = end
            continue
        batches = _loader(stage, objective, cfg.seed + begin, rank, world)
        model.train()
        while step < end:
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            loss, parts = model(batch)
            if not torch.isfinite(loss):
                raise ValueError(f"pretraining loss became {float(loss)} at step {step} (stage {stage.name}); lower [optim] lr.")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            optimiser.step()
            scheduler.step()
            objective.after_step(step, total)
            step += 1
            loss_value = float(loss.detach())
            if rank == 0:
                lr = scheduler.get_last_lr()[0]
                history.append({"step": step, "stage": stage.name, "loss": loss_value, "lr": lr, **parts})
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", stage=stage.name)
                if writer is not None and (step % cfg.run.log_every == 0 or step == total):
                    writer.add_scalar("loss/total", loss_value, step)
                    for key, value in parts.items():
                        writer.add_scalar(f"loss/{key}", value, step)
                    writer.add_scalar("lr", lr, step)
                if step % cfg.run.checkpoint_every == 0 or step == total:
                    _save_atomic(
                        {
                            "objective": objective.state_dict(),
                            "optimiser": optimiser.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "step": step,
                            "history": history,
                        },
                        ckpt_path,
                    )
        begin = end
    bar.close()
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {"steps": step, "seconds": seconds, "final_loss": loss_value, "encoder": None}
    if rank == 0:
        if writer is not None:
            writer.close()
        (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
        meta = {"pretraining": {"objective": cfg.objective, "steps": step, "config": str(cfg.path)}}
        result["encoder"] = str(save_encoder(out / "encoder", encoder, meta))
        log.info("pretraining %s: %d steps in %.1f s; encoder saved to %s", cfg.objective, step, seconds, result["encoder"])
    if world > 1:
        import torch.distributed as dist

        # every rank records a digest of its final weights, so a run can be checked for drift
        (out / f"rank-{rank}.sha256").write_text(_state_digest(objective) + "\n")
        dist.barrier()
        dist.destroy_process_group()
    return result


def _state_digest(module: nn.Module) -> str:
    """SHA-256 over a module's parameters and buffers, in state-dict order."""
    import hashlib

    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(args: argparse.Namespace) -> int:
    """Entry point of ``mrinode train pretrain``.

    Parameters
    ----------
    args : argparse.Namespace
        With ``config`` (path), ``max_steps`` (int or None) and ``resume`` (bool).

    Returns
    -------
    int
        0 on success, 2 when the config, data or checkpoint cannot be used (a sentence
        saying why goes to stderr).
    """
    try:
        cfg = load_config(args.config)
        result = train(cfg, resume=bool(getattr(args, "resume", False)), max_steps=getattr(args, "max_steps", None))
    except (ValueError, FileNotFoundError) as exc:
        print(f"mrinode train pretrain: {exc}", file=sys.stderr)
        return 2
    if result["encoder"]:
        print(f"pretrained {cfg.objective} for {result['steps']} steps; encoder: {result['encoder']}")
    return 0


if __name__ == "__main__":  # torchrun -m training.pretrain.run --config FILE
    parser = argparse.ArgumentParser(description="Pretrain an encoder (same as `mrinode train pretrain`).")
    parser.add_argument("--config", required=True)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    sys.exit(main(parser.parse_args()))
