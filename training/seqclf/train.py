"""Train the pixel sequence classifier on synthetic slices and export it as a bundle.

``python -m training.seqclf.train --cache DIR --out models/bundles/sequence-classifier``

Strong augmentation stands in for the variety of real scanners: random crop and zoom,
flips and 90° turns, resolution loss (down- then up-sampling), gamma, a smooth
multiplicative bias field, additive noise and a global intensity scale. A temperature is
fitted on held-out subjects (series-level negative log-likelihood) so that the
probabilities fusion uses are calibrated. CPU only, one or two threads.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.seqclf.data import CLASSES, load_slices

__all__ = ["augment", "fit_temperature", "main", "series_logits", "train"]

log = logging.getLogger(__name__)

INPUT_SIZE = 64


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Augment a batch of stored slices (B, 1, S, S) into network input (B, 1, 64, 64).

    Parameters
    ----------
    x : torch.Tensor
        Slices scaled to their 99th percentile.
    gen : torch.Generator
        Random source.

    Returns
    -------
    torch.Tensor
        Augmented slices, rescaled to their 99th percentile like ``models.seqclf.prepare_slices``.
    """
    b, _, s, _ = x.shape

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*(shape or (b,)), generator=gen)

    # crop and zoom (random square window of 75-100 %, random place) and a small rotation,
    # as one batched affine resampling
    scale = u(0.75, 1.0)
    angle = u(-0.25, 0.25)
    shift = (1.0 - scale).view(b, 1) * (2 * torch.rand((b, 2), generator=gen) - 1)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [b, 1, INPUT_SIZE, INPUT_SIZE], align_corners=False)
    smooth = F.avg_pool2d(x, 3, stride=1, padding=1) if s > 1.3 * INPUT_SIZE else x
    out = F.grid_sample(smooth, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # resolution loss: through a grid 1-2x coarser (one factor per batch)
    f = float(u(1.0, 2.0, 1))
    if f > 1.1:
        low = max(8, int(INPUT_SIZE / f))
        out = F.interpolate(out, size=(low, low), mode="bilinear", antialias=True, align_corners=False)
        out = F.interpolate(out, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    # flips and 90-degree turns (planes and display conventions differ)
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    k = int(torch.randint(0, 4, (1,), generator=gen))
    out = torch.rot90(out, k, dims=(2, 3))
    # smooth multiplicative bias field
    coarse = 1.0 + 0.3 * (torch.rand((b, 1, 3, 3), generator=gen) - 0.5) * 2 * u(0, 1).view(b, 1, 1, 1)
    out = out * F.interpolate(coarse, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", align_corners=False)
    # gamma and global scale
    out = out.clamp_min(0) ** u(0.7, 1.4).view(b, 1, 1, 1)
    # additive noise (magnitude, so kept positive)
    sigma = u(0.0, 0.05).view(b, 1, 1, 1)
    noise_r = torch.randn(out.shape, generator=gen) * sigma
    noise_i = torch.randn(out.shape, generator=gen) * sigma
    out = torch.sqrt((out + noise_r) ** 2 + noise_i**2)
    p99 = torch.quantile(out.flatten(1), 0.99, dim=1).clamp_min(1e-6).view(b, 1, 1, 1)
    return (out / p99 * u(0.85, 1.15).view(b, 1, 1, 1)).clamp(0, 3)


def _resize(x: torch.Tensor) -> torch.Tensor:
    out = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    p99 = torch.quantile(out.flatten(1), 0.99, dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)
    return (out / p99).clamp(0, 3)


@torch.no_grad()
def series_logits(net: torch.nn.Module, x: np.ndarray, y: np.ndarray, group: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Average slice log-probabilities over pseudo-series of ``group`` slices of one class.

    Parameters
    ----------
    net : torch.nn.Module
        The network (eval mode).
    x, y : numpy.ndarray
        Slices and classes (one subject's slices of one class are contiguous).
    group : int
        Slices per pseudo-series.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Series log-probabilities (n, C) and their classes (n,).
    """
    net.eval()
    inp = _resize(torch.from_numpy(x.astype(np.float32))[:, None])
    logp = torch.cat([torch.log_softmax(net(inp[i : i + 256]), dim=1) for i in range(0, len(inp), 256)])
    outs, labels = [], []
    yt = torch.from_numpy(y)
    i = 0
    while i < len(y):
        j = i
        while j < len(y) and j - i < group and y[j] == y[i]:
            j += 1
        outs.append(logp[i:j].mean(dim=0))
        labels.append(yt[i])
        i = j
    return torch.stack(outs), torch.stack(labels)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the temperature in [0.5, 8] minimising the series-level NLL."""
    best_t, best = 1.0, float("inf")
    for t in np.linspace(0.5, 8.0, 61):
        nll = float(F.cross_entropy(logits / float(t), labels))
        if nll < best:
            best_t, best = float(t), nll
    return best_t


def train(
    cache: Path, train_seeds: Sequence[int], val_seeds: Sequence[int], *, epochs: int = 25, batch: int = 64, seed: int = 0,
    widths: Sequence[int] = (16, 32, 64, 128), fraction: float = 0.5,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the classifier; return the network and its metrics.

    Parameters
    ----------
    cache : Path
        Slice cache folder (see :mod:`training.seqclf.data`).
    train_seeds, val_seeds : sequence of int
        Subjects for training and for validation/calibration (disjoint).
    epochs, batch, seed : int
        Optimisation settings.
    fraction : float
        Share of the training slices drawn (afresh) in each epoch.
    widths : sequence of int
        Encoder channels per stage.

    Returns
    -------
    (torch.nn.Module, dict)
        The network (eval mode) and metrics (accuracies, temperature, confusion matrix).
    """
    from models.seqclf import SeqClfNet

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = load_slices(cache, train_seeds)
    xva, yva = load_slices(cache, val_seeds)
    net = SeqClfNet(len(CLASSES), widths)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    per_epoch = int(len(ytr) * fraction)
    steps = epochs * max(1, per_epoch // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    xt = torch.from_numpy(xtr.astype(np.float32))[:, None]
    yt = torch.from_numpy(ytr)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(yt), generator=gen)[:per_epoch]
        total = 0.0
        for i in range(0, len(perm) - batch + 1, batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(net(augment(xt[idx], gen)), yt[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log.info("epoch %d/%d loss %.4f (%.0f s)", epoch + 1, epochs, total / max(1, len(perm)), time.perf_counter() - t0)
    net.eval()
    with torch.no_grad():
        inp = _resize(torch.from_numpy(xva.astype(np.float32))[:, None])
        pred = torch.cat([net(inp[i : i + 256]).argmax(1) for i in range(0, len(inp), 256)])
    slice_acc = float((pred == torch.from_numpy(yva)).float().mean())
    s_logits, s_labels = series_logits(net, xva, yva)
    temperature = fit_temperature(s_logits, s_labels)
    s_pred = s_logits.argmax(1)
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    for t, p in zip(s_labels.tolist(), s_pred.tolist(), strict=True):
        confusion[t, p] += 1
    metrics = {
        "validation_slice_accuracy": round(slice_acc, 4),
        "validation_series_accuracy": round(float((s_pred == s_labels).float().mean()), 4),
        "validation_series": len(s_labels),
        "temperature": temperature,
        "confusion_rows_true_cols_pred": {"classes": list(CLASSES), "matrix": confusion.tolist()},
        "train_slices": len(ytr),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return net, metrics


def export(net: torch.nn.Module, metrics: dict[str, Any], out: Path, train_seeds: Sequence[int], val_seeds: Sequence[int],
           widths: Sequence[int], command: str) -> Path:
    """Write the bundle (weights + card with sha256) through ``models.bundle.save_bundle``."""
    from models.bundle import NOT_CLINICAL, Card, LabelInfo, save_bundle

    colours = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0), (204, 121, 167)]
    labels = [
        LabelInfo(i, cls, ("MRSEQ", "99MRINODE", "MR sequence"), (cls, "99MRINODE", f"{cls} series"), colours[i % len(colours)])
        for i, cls in enumerate(CLASSES)
    ]
    card = Card(
        name="sequence-classifier",
        version="0.1.0",
        task="sequence-classification",
        labels=labels,
        channels=["ANY"],
        required_sequences=[],
        optional_sequences=[],
        preprocessing={
            "input_size": INPUT_SIZE,
            "max_slices": 8,
            "slices": "up to 8 slices with the most signal, padded square, antialiased resize",
            "intensity": "stack scaled so that its 99th percentile is 1, clipped to [0, 3]",
            "temperature": metrics["temperature"],
            "note": "'T1' is the T1 family (pre- and post-contrast); T1 vs T1C is decided from headers.",
        },
        network={"name": "seqclf2d", "n_classes": len(CLASSES), "widths": list(widths), "dropout": 0.2, "convs": 1},
        training={
            "data": "synthetic brain MRI from training.synth (physics-based; MNI152/CAT12 tissue maps), 2 mm grid, "
            "random vendor, field strength 1.5/3 T, SNR scale 0.5-1.5, tumour in ~80 % of subjects",
            "train_subject_seeds": sorted(train_seeds),
            "validation_subject_seeds": sorted(val_seeds),
            "augmentation": "crop/zoom/rotation, flips, 90-degree turns, resolution loss 1-2x, gamma 0.7-1.4, bias field, Rician-like noise (sigma <= 0.05), scale",
            "command": command,
        },
        metrics=metrics,
        intended_use=NOT_CLINICAL + " A small 2D CNN that gives a second opinion on a series' MRI sequence; "
        "its probabilities are fused with header rules in dicom_node.identify.",
    )
    save_bundle(out, card, net.state_dict())
    return out


def _ranges(values: Sequence[int]) -> list[int]:
    if len(values) % 2:
        raise SystemExit(f"seed ranges come in pairs FIRST STOP; got {len(values)} numbers.")
    return [s for a, b in zip(values[::2], values[1::2], strict=True) for s in range(a, b)]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train and export the bundle."""
    p = argparse.ArgumentParser(description="Train the pixel sequence classifier on synthetic data and export a bundle.")
    p.add_argument("--cache", type=Path, required=True, help="slice cache folder (generated if missing)")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[1000, 1024], metavar="FIRST STOP",
                   help="pairs of seed ranges [FIRST, STOP) of training subjects")
    p.add_argument("--val-seeds", type=int, nargs="+", default=[1024, 1030], metavar="FIRST STOP",
                   help="pairs of seed ranges of validation/calibration subjects")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--fraction", type=float, default=0.5, help="share of training slices per epoch")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    widths = (16, 32, 64, 128)
    train_seeds = _ranges(args.train_seeds)
    val_seeds = _ranges(args.val_seeds)
    net, metrics = train(args.cache, train_seeds, val_seeds, epochs=args.epochs, widths=widths, fraction=args.fraction)
    command = (
        f"python -m training.seqclf.train --cache CACHE --out {args.out} --train-seeds {' '.join(map(str, args.train_seeds))} "
        f"--val-seeds {' '.join(map(str, args.val_seeds))} --epochs {args.epochs} --fraction {args.fraction} "
        f"--threads {args.threads}  (CACHE filled first by: python -m training.seqclf.data --cache CACHE --seeds A B "
        "[--acquired], one call per range; seeds >= 1100 were cut from acquired series)"
    )
    export(net, metrics, args.out, train_seeds, val_seeds, widths, command)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
