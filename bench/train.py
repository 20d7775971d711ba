"""``python -m bench.train [--quick]``: pretraining throughput per objective.

For each objective's ``-tiny`` config (the encoders the tests use; synthetic subjects from
the project's engine, written once to a temporary folder), the real data path of
``mrinode train pretrain`` (dataset, sampler, loader) feeds the objective for a number of
steps. The table gives steps/s and samples/s, and the step time relative to an anchor
measured in the same run: the bare encoder's forward + backward on the same batches (so the
ratio is the cost of the method's views and heads). On a GPU it also gives the fraction of
step time the GPU is busy (compute time over compute + data wait, measured with CUDA
synchronisation), which should be ≥ 80 % for data loading not to starve it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

_OBJECTIVES = ("swin_ssl", "cross_sequence", "prism", "dino2d")
_CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def _subjects(folder: Path, n: int) -> Path:
    from training.synth import generate_subject, write_subject

    for i in range(n):
        write_subject(generate_subject(515000 + i, voxel_mm=4.0, tumour=i % 2 == 0), folder)
    return folder


def _measure(objective: str, data_dir: Path, steps: int, device: Any) -> dict[str, float]:
    import torch

    from models.encoders import build_encoder
    from training.pretrain.config import parse_config
    from training.pretrain.objectives.common import deepest_features
    from training.pretrain.registry import build_objective
    from training.pretrain.run import _loader

    raw = tomllib.loads((_CONFIGS / f"pretrain-{objective}-tiny.toml").read_text())
    raw["data"]["sources"] = [str(data_dir)]
    raw["data"].pop("synth", None)
    cfg = parse_config(raw, f"bench {objective}")
    torch.manual_seed(0)
    encoder = build_encoder(cfg.encoder)
    obj = build_objective(objective, encoder, cfg.options, int(cfg.encoder["in_channels"])).to(device)
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=1e-4)
    batches = _loader(cfg.stages[0], obj, 0, 0, 1)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed(step_fn: Any) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        sync()
        t1 = time.perf_counter()
        step_fn(batch)
        sync()
        return t1 - t0, time.perf_counter() - t1, int(batch["image"].shape[0])

    def objective_step(batch: dict[str, Any]) -> None:
        loss, _ = obj(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        obj.after_step(1, 10)

    def anchor_step(batch: dict[str, Any]) -> None:
        loss = deepest_features(encoder, batch["image"]).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    wait = busy = a_busy = 0.0
    samples = 0
    for i in range(steps + 2):  # anchor and objective steps interleaved: same machine load
        _, ab, _ = timed(anchor_step)
        w, b, n = timed(objective_step)
        if i >= 2:  # two warm-up rounds
            a_busy, wait, busy, samples = a_busy + ab, wait + w, busy + b, samples + n
    total = wait + busy
    return {
        "steps_s": steps / total,
        "samples_s": samples / total,
        "ratio": (busy / steps) / max(1e-9, a_busy / steps),
        "busy": busy / total,
        "batch": samples / steps,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the throughput table; returns 0.

    Parameters
    ----------
    argv : sequence of str, optional
        ``[--quick] [--steps N] [--threads T]``.
    """
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(list(argv) if argv is not None else None)
    steps = args.steps or (4 if args.quick else 20)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {args.threads} threads"
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data = _subjects(Path(tmp), 4)
        print(f"pretraining throughput — tiny configs, {steps} steps after 2 warm-up, device: {name}")
        header = f"{'objective':<16}{'batch':>6}{'steps/s':>10}{'samples/s':>11}{'× bare encoder':>16}"
        header += f"{'compute share':>15}{'GPU busy':>15}"
        print(header)
        for objective in _OBJECTIVES:
            r = _measure(objective, data, steps, device)
            share = f"{100 * r['busy']:.0f} %"
            gpu = share if device.type == "cuda" else "not measured"
            print(
                f"{objective:<16}{r['batch']:>6.0f}{r['steps_s']:>10.2f}{r['samples_s']:>11.2f}{r['ratio']:>16.2f}"
                f"{share:>15}{gpu:>15}"
            )
    print("anchor: the bare encoder's forward + backward on the same batches, same run (× = objective step time / anchor).")
    if device.type == "cuda":
        print("GPU busy: compute time / (compute + data wait) with CUDA synchronisation (target ≥ 80 %).")
    else:
        print("GPU busy: NOT MEASURED — no CUDA GPU in this run; the ≥ 80 % GPU-busy target is unchecked here "
              "(compute share is the CPU step time over step + data wait).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
