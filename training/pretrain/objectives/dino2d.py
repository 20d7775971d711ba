"""``dino2d``: student/teacher self-distillation on 2D slices, after BrainDINO and MRI-CORE
(both DINO / DINOv2 on MRI slices; Caron et al. 2021).

Each axial slice gives ``n_global`` global crops (large random-resized crops) and
``n_local`` local crops (small ones), with flips, per-sequence intensity jitter and sequence
dropout. The teacher (an exponential moving average of the student, momentum rising from
``momentum`` to 1 on a cosine) sees the global crops only; the student sees all of them and
matches the teacher's centred, sharpened distribution over ``prototypes`` outputs for every
pair of different crops. The ViT encoder has fixed position embeddings, so local crops are
resized to the encoder's input size.

Fine-tuning after it — frozen encoder with a light head, or LoRA adapters — is in
:mod:`training.pretrain.adapters`.

Options: ``n_global`` (2), ``n_local`` (4), ``global_scale`` ([0.5, 1.0]), ``local_scale``
([0.15, 0.4]), ``prototypes`` (1024), ``bottleneck`` (128), ``hidden`` (256),
``student_temp`` (0.1), ``teacher_temp`` (0.04), ``center_momentum`` (0.9), ``momentum`` (0.996).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.pretrain.objectives.common import deepest_features, pool
from training.pretrain.options import Dino2DOptions, typed_options
from training.pretrain.registry import Objective

__all__ = ["Dino2D", "DinoHead", "random_resized_crops"]


class DinoHead(nn.Module):
    """DINO projection head: MLP, L2 normalisation, normalised prototype layer.

    Parameters
    ----------
    in_dim : int
        Pooled feature size.
    prototypes : int
        Output size.
    hidden : int
        MLP width.
    bottleneck : int
        Size before the prototype layer.
    """

    def __init__(self, in_dim: int, prototypes: int, hidden: int = 256, bottleneck: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        self.prototypes = nn.Parameter(torch.randn(prototypes, bottleneck) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return prototype logits ``(B, prototypes)``."""
        h = F.normalize(self.mlp(x), dim=1)
        return F.linear(h, F.normalize(self.prototypes, dim=1))


def random_resized_crops(
    x: torch.Tensor, scale: tuple[float, float], present: torch.Tensor | None = None
) -> torch.Tensor:
    """Random-resized crops with flips, intensity jitter and sequence dropout, batched.

    Parameters
    ----------
    x : torch.Tensor
        Slices ``(B, C, H, W)``.
    scale : tuple of float
        Range of the crop's area as a fraction of the slice.
    present : torch.Tensor, optional
        ``(B, C)`` 0/1 acquired channels; when given, each acquired channel is dropped with
        probability 0.3 (at least one kept).

    Returns
    -------
    torch.Tensor
        Crops resized to ``(H, W)``.
    """
    b = x.shape[0]
    area = torch.empty(b).uniform_(*scale)
    side = area.sqrt()
    flip = torch.where(torch.rand(b) < 0.5, -1.0, 1.0)
    tx = (torch.rand(b) * 2 - 1) * (1 - side)
    ty = (torch.rand(b) * 2 - 1) * (1 - side)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = side * flip
    theta[:, 1, 1] = side
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gain = torch.empty(b, x.shape[1], 1, 1).uniform_(0.8, 1.2).to(x)
    shift = torch.empty(b, x.shape[1], 1, 1).uniform_(-0.2, 0.2).to(x)
    out = out * gain + shift * (out != 0)
    if present is not None:
        keep = (torch.rand(present.shape) > 0.3).to(present) * present
        fallback = F.one_hot((torch.rand(present.shape).to(present) + 2 * present).argmax(1), present.shape[1])
        keep = torch.where(keep.sum(1, keepdim=True) > 0, keep, fallback.to(present))
        out = out * keep.view(b, -1, 1, 1)
    return out


class Dino2D(Objective):
    """Self-distillation with an EMA teacher and multi-crop over a 2D encoder."""

    spatial_dims = 2
    options_model = Dino2DOptions

    def __init__(self, encoder: nn.Module, options: dict[str, Any], in_channels: int) -> None:
        super().__init__(encoder, options, in_channels)
        o = typed_options(Dino2DOptions, self.options)
        self.n_global = o.n_global  # >= 2 (the teacher's views), checked by the options model
        self.n_local = o.n_local
        self.global_scale = o.global_scale
        self.local_scale = o.local_scale
        self.student_temp = o.student_temp
        self.teacher_temp = o.teacher_temp
        self.center_momentum = o.center_momentum
        self.base_momentum = o.momentum
        self.head = DinoHead(self.feature_channels, o.prototypes, o.hidden, o.bottleneck)
        self.teacher = copy.deepcopy(encoder)
        self.teacher_head = copy.deepcopy(self.head)
        for p in (*self.teacher.parameters(), *self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.center: torch.Tensor
        self.register_buffer("center", torch.zeros(1, o.prototypes))

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the cross-entropy between teacher and student over all crop pairs."""
        x, present = batch["image"], batch["present"]
        gscale = (self.global_scale[0], self.global_scale[1])
        lscale = (self.local_scale[0], self.local_scale[1])
        globals_ = [random_resized_crops(x, gscale, present) for _ in range(self.n_global)]
        locals_ = [random_resized_crops(x, lscale, present) for _ in range(self.n_local)]
        student_out = self.head(pool(deepest_features(self.encoder, torch.cat(globals_ + locals_))))
        with torch.no_grad():
            t_logits = self.teacher_head(pool(deepest_features(self.teacher, torch.cat(globals_))))
            teacher = F.softmax((t_logits - self.center) / self.teacher_temp, dim=1).chunk(self.n_global)
        student = F.log_softmax(student_out / self.student_temp, dim=1).chunk(self.n_global + self.n_local)
        total = student_out.new_zeros(())
        pairs = 0
        for ti, t in enumerate(teacher):
            for si, s in enumerate(student):
                if si == ti:
                    continue
                total = total + (-(t * s).sum(dim=1)).mean()
                pairs += 1
        loss = total / pairs
        with torch.no_grad():
            batch_center = t_logits.mean(dim=0, keepdim=True)
            self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)
            entropy = float(-(teacher[0] * teacher[0].clamp_min(1e-12).log()).sum(dim=1).mean())
        return loss, {"distill": float(loss.detach()), "teacher_entropy": entropy}

    def momentum(self, step: int, max_steps: int) -> float:
        """Teacher EMA momentum at ``step``: cosine from ``momentum`` to 1."""
        frac = min(1.0, step / max(1, max_steps))
        return 1.0 - (1.0 - self.base_momentum) * (math.cos(math.pi * frac) + 1) / 2

    @torch.no_grad()
    def after_step(self, step: int, max_steps: int) -> None:
        """Move the teacher towards the student (EMA)."""
        m = self.momentum(step, max_steps)
        for student, teacher in ((self.encoder, self.teacher), (self.head, self.teacher_head)):
            for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
