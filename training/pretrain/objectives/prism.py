"""``prism``: contrast-disentangled pretraining after PRISM (Sun et al. 2025).

Two views of one crop keep different random subsets of its acquired sequences, and random
patches are hidden in each. The encoder's deepest map feeds two 1×1 heads:

* a **structure** head (anatomy): its maps from the two views must agree (the anatomy under
  both contrast subsets is the same), voxel by voxel after normalisation;
* a **sequence** head (contrast): its pooled vector regresses the acquisition parameters
  (log TR, log TE, flip angle) of every sequence kept in the view;

an orthogonality penalty keeps the pooled structure and sequence vectors apart, and a light
decoder fed with both reconstructs the hidden patches of the kept sequences.

``loss = w_recon * recon + w_param * param + w_struct * struct + w_orth * orth``.

Options: ``mask_ratio`` (0.5), ``mask_patch`` (8), ``embed_dim`` (64), ``keep_prob`` (0.6),
``w_recon`` (1.0), ``w_param`` (0.5), ``w_struct`` (0.5), ``w_orth`` (0.1), ``decoder_width`` (64),
``scanner_shift`` (0: off; above 0 each view is also shifted independently as another scanner would acquire
it, :mod:`training.pretrain.acquisition`, so the structure maps must agree across scanners too).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.pretrain.acquisition import scanner_shift
from training.pretrain.data import PARAM_NAMES
from training.pretrain.masking import apply_mask, masked_mse, random_patch_mask
from training.pretrain.objectives.common import ProjectionHead, ReconstructionHead, deepest_features, pool
from training.pretrain.options import PrismOptions, typed_options
from training.pretrain.registry import Objective

__all__ = ["Prism", "random_subset"]


def random_subset(present: torch.Tensor, keep_prob: float) -> torch.Tensor:
    """Keep each acquired channel with probability ``keep_prob``, at least one per sample.

    Parameters
    ----------
    present : torch.Tensor
        ``(B, C)`` 0/1 availability.
    keep_prob : float
        Probability of keeping an acquired channel.

    Returns
    -------
    torch.Tensor
        ``(B, C)`` 0/1 float mask, a subset of ``present`` with at least one 1 per row.
    """
    keep = (torch.rand(present.shape, device=present.device) < keep_prob).to(present.dtype) * present
    scores = torch.rand(present.shape, device=present.device) + 2.0 * present
    one = F.one_hot(scores.argmax(dim=1), present.shape[1]).to(present.dtype)
    empty = (keep.sum(dim=1, keepdim=True) == 0).to(present.dtype)
    return keep + empty * one


class Prism(Objective):
    """Masked reconstruction + acquisition-parameter regression + structure/sequence heads."""

    spatial_dims = 3
    options_model = PrismOptions

    def __init__(self, encoder: nn.Module, options: dict[str, Any], in_channels: int) -> None:
        super().__init__(encoder, options, in_channels)
        o = typed_options(PrismOptions, self.options)
        self.mask_ratio = o.mask_ratio
        self.mask_patch = o.mask_patch
        self.keep_prob = o.keep_prob
        self.scanner_shift = o.scanner_shift
        dim = o.embed_dim
        self.weights = (o.w_recon, o.w_param, o.w_struct, o.w_orth)
        self.structure_head = nn.Conv3d(self.feature_channels, dim, 1)
        self.sequence_head = nn.Conv3d(self.feature_channels, dim, 1)
        self.param_head = ProjectionHead(dim, in_channels * len(PARAM_NAMES), hidden=128)
        self.decoder = ReconstructionHead(2 * dim, in_channels, self.feature_stride, 3, o.decoder_width)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the loss over two contrast-subset views and its four terms."""
        image, present = batch["image"], batch["present"]
        params, pmask = batch["params"], batch["param_mask"]
        b, c = image.shape[:2]
        keeps = [random_subset(present, self.keep_prob) for _ in range(2)]
        masks = [
            random_patch_mask(b, image.shape[2:], self.mask_patch, self.mask_ratio, device=image.device)
            for _ in range(2)
        ]
        # each view as another scanner might acquire it (scanner_shift 0: unchanged); the decoder rebuilds the clean crop
        views = torch.cat([
            apply_mask(scanner_shift(image, present, self.scanner_shift) * k.view(b, c, 1, 1, 1), m)
            for k, m in zip(keeps, masks, strict=True)
        ])
        feats = deepest_features(self.encoder, views)
        struct_map = self.structure_head(feats)
        seq_map = self.sequence_head(feats)
        recon_img = self.decoder(torch.cat([struct_map, seq_map], dim=1))
        keep = torch.cat(keeps)
        recon = masked_mse(recon_img, torch.cat([image, image]), torch.cat(masks), keep)
        pred = self.param_head(seq_map).view(2 * b, c, len(PARAM_NAMES))
        w = torch.cat([pmask, pmask]) * keep.unsqueeze(-1)
        param = ((pred - torch.cat([params, params])) ** 2 * w).sum() / w.sum().clamp_min(1.0)
        s1, s2 = F.normalize(struct_map, dim=1).chunk(2)
        struct = ((s1 - s2) ** 2).sum(dim=1).mean()
        ps, pq = F.normalize(pool(struct_map), dim=1), F.normalize(pool(seq_map), dim=1)
        orth = ((ps * pq).sum(dim=1) ** 2).mean()
        wr, wp, ws, wo = self.weights
        loss = wr * recon + wp * param + ws * struct + wo * orth
        return loss, {
            "recon": float(recon.detach()),
            "param": float(param.detach()),
            "struct": float(struct.detach()),
            "orth": float(orth.detach()),
        }
