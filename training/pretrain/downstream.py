"""Small supervised fine-tuning and held-out evaluation for the label-efficiency evidence.

The evidence run needs many short fine-tunings (objectives × label fractions × repeats) on
exact subject subsets with one fixed held-out set, so it drives its own loop here rather than
``mrinode train finetune``. The parts are the project's own: the segmenter
(:func:`models.segmenter.build_segmenter`, which loads a saved encoder exactly as fine-tuning
does), the fine-tuning datasets and transforms (:mod:`training.datasets`: engine
preprocessing, label-biased crops, flips, intensity jitter, sequence dropout) and the BraTS
region metrics (:mod:`training.regions`: Dice and HD95 for WT, TC, ET).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch

__all__ = ["evaluate_segmenter", "finetune_segmenter", "load_items"]


def load_items(subject_dirs: Sequence[str], channels: Sequence[str]) -> list[dict[str, Any]]:
    """Dataset items (see :func:`training.datasets.subject_items`) for synthetic subject folders.

    Parameters
    ----------
    subject_dirs : sequence of str
        Folders ``<subject>/`` holding ``<SEQ>.nii.gz`` and ``labels.nii.gz``.
    channels : sequence of str
        Channel layout.

    Returns
    -------
    list of dict
        One item per folder.

    Raises
    ------
    ValueError
        If a folder has no label map or none of the channels.
    """
    from pathlib import Path

    items = []
    for d in subject_dirs:
        folder = Path(d)
        labels = folder / "labels.nii.gz"
        if not labels.is_file():
            raise ValueError(f"subject folder {folder} has no labels.nii.gz; fine-tuning needs one.")
        seqs = {c: str(folder / f"{c}.nii.gz") for c in channels if (folder / f"{c}.nii.gz").is_file()}
        if not seqs:
            raise ValueError(f"subject folder {folder} has none of the sequences {list(channels)}.")
        items.append({"id": folder.name, "sequences": seqs, "labels": str(labels), "label_map": {}})
    return items


def finetune_segmenter(
    seg_cfg: dict[str, Any],
    items: list[dict[str, Any]],
    channels: Sequence[str],
    *,
    spacing_mm: float,
    roi: Sequence[int],
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 2,
    sequence_dropout: float = 0.0,
    seed: int = 0,
    encoder_lr_scale: float = 1.0,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fine-tune a segmenter on labelled items for a fixed number of steps.

    Parameters
    ----------
    seg_cfg : dict
        :func:`models.segmenter.build_segmenter` config (``encoder_checkpoint`` for a
        pretrained start), or with ``slice`` set a slice segmenter
        (:func:`training.pretrain.slices.build_slice_segmenter`; ``roi`` is then
        ``[h, w, 1]``).
    items : list of dict
        From :func:`load_items`.
    channels : sequence of str
        Channel layout.
    spacing_mm : float
        Model grid spacing.
    roi : sequence of int
        Training crop size.
    steps : int
        Optimiser steps.
    lr : float
        AdamW learning rate (cosine decay).
    batch_size : int
        Crops per step, all from one subject (so that one labelled subject still gives a
        batch that batch norm can use).
    sequence_dropout : float
        Probability of dropping a random subset of sequences per crop.
    seed : int
        Seed of the weights' random parts and of the crops.
    encoder_lr_scale : float
        Learning rate of the pretrained encoder's parameters relative to ``lr`` (only with
        ``encoder_checkpoint``; the new parameters, and every parameter of a network from
        scratch, train at ``lr``).

    Returns
    -------
    tuple
        The trained network (eval mode) and ``{"losses": [...], "seconds": s}``.
    """
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    from models.segmenter import build_segmenter
    from training.datasets import make_dataset, train_transforms
    from training.pretrain.slices import build_slice_segmenter

    set_determinism(seed=seed)
    torch.manual_seed(seed)
    net: torch.nn.Module = build_slice_segmenter(seg_cfg) if seg_cfg.get("slice") else build_segmenter(seg_cfg)
    # crop centres are drawn from tumour and head voxel indices cached once per subject (not per crop)
    augment = train_transforms(roi, sequence_dropout, num_samples=batch_size, cached_indices=True)
    augment.set_random_state(seed=seed)  # MONAI random transforms keep their own generators
    data = make_dataset(items, channels, [spacing_mm] * 3, augment, crop_indices_roi=roi)
    from monai.data import list_data_collate

    loader = torch.utils.data.DataLoader(
        data, batch_size=1, shuffle=True, num_workers=0, collate_fn=list_data_collate,
        generator=torch.Generator().manual_seed(seed),
    )
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(_param_groups(net, lr, encoder_lr_scale if seg_cfg.get("encoder_checkpoint") else 1.0),
                            weight_decay=1e-5)
    total = max(1, steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, total) / total)))
    losses: list[float] = []
    started = time.perf_counter()
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    net.train()
    for _ in range(steps):
        batch = next(batches)
        x, y = batch["image"], batch["label"]
        loss = loss_fn(net(torch.as_tensor(x)), torch.as_tensor(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    net.eval()
    set_determinism(seed=None)
    return net, {"losses": losses, "seconds": time.perf_counter() - started}


def _param_groups(net: torch.nn.Module, lr: float, encoder_scale: float) -> list[dict[str, Any]]:
    """Optimiser groups: the encoder's trainable parameters at ``lr * encoder_scale``, the rest at ``lr``."""
    inner = getattr(net, "net", net)  # a slice segmenter is wrapped for 3D batches
    encoder = getattr(inner, "encoder", None)
    enc_ids = set()
    if isinstance(encoder, torch.nn.Module):  # LoRA adapters are new parameters: full rate
        enc_ids = {id(p) for n, p in encoder.named_parameters() if "lora_" not in n}
    trainable = [p for p in net.parameters() if p.requires_grad]
    enc = [p for p in trainable if id(p) in enc_ids]
    rest = [p for p in trainable if id(p) not in enc_ids]
    groups = [{"params": rest, "lr": lr}]
    if enc:
        groups.append({"params": enc, "lr": lr * encoder_scale})
    return groups


def evaluate_segmenter(
    net: torch.nn.Module,
    items: list[dict[str, Any]],
    channels: Sequence[str],
    *,
    spacing_mm: float,
    roi: Sequence[int],
    overlap: float = 0.25,
) -> dict[str, float]:
    """Mean Dice and HD95 (mm) per region over held-out subjects, all sequences present.

    Parameters
    ----------
    net : torch.nn.Module
        A segmenter.
    items : list of dict
        Held-out subjects from :func:`load_items`.
    channels : sequence of str
        Channel layout.
    spacing_mm : float
        Model grid spacing.
    roi : sequence of int
        Sliding-window size.
    overlap : float
        Sliding-window overlap.

    Returns
    -------
    dict
        ``dice_WT``, ``dice_TC``, ``dice_ET``, ``hd95_WT``, ... (HD95 averaged over subjects
        where it is defined) and ``subjects``.
    """
    from monai.inferers import sliding_window_inference

    from training.datasets import LoadSubjectd
    from training.regions import region_scores

    load = LoadSubjectd(channels, [spacing_mm] * 3)
    scores: dict[str, list[float]] = {}
    net.eval()
    with torch.inference_mode():
        for item in items:
            d = load(cast("Mapping[Hashable, Any]", item))
            x = torch.as_tensor(np.asarray(d["image"]))[None]
            batch = 16 if 1 in list(roi) else 1  # slice windows are small: several per call
            logits = sliding_window_inference(x, list(roi), batch, net, overlap=overlap)
            pred = torch.argmax(torch.as_tensor(logits)[0], 0).numpy()
            ref = np.asarray(d["label"])[0].astype(np.int16)
            for k, v in region_scores(pred, ref, [spacing_mm] * 3).items():
                scores.setdefault(k, []).append(v)
    out = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in scores.items()}
    out["subjects"] = float(len(items))
    return out
