"""``swin_ssl``: the self-supervised Swin-UNETR pretraining of Tang et al. (CVPR 2022), as used
by BrainSegFounder (Cox et al. 2024).

Three proxy tasks on two augmented views of each crop:

* rotation prediction: each view is rotated by 0/90/180/270 degrees in the axial plane and
  a linear head predicts which (4-way cross-entropy);
* contrastive coding: pooled, projected features of the two views of one crop are positives,
  the other crops of the batch negatives (InfoNCE);
* masked-volume inpainting: random patches are hidden and a light decoder reconstructs the
  rotated, unmasked crop (L1 over acquired sequences).

``loss = w_rot * rot + w_contrast * contrast + w_recon * recon`` (all weights 1 by default,
as in the paper). BrainSegFounder runs it in two stages — general (healthy, any-sequence)
data, then target (tumour) data; the stages are a ``[[stages]]`` list in the run config.

Options (``[objective]`` table): ``mask_ratio`` (0.5), ``mask_patch`` (8), ``temperature``
(0.2), ``w_rot``, ``w_contrast``, ``w_recon`` (1.0), ``proj_dim`` (128), ``decoder_width`` (64),
``scanner_shift`` (0: off; above 0 each view's input is shifted as another scanner would acquire it,
:mod:`training.pretrain.acquisition`, and the decoder rebuilds the unshifted crop).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.pretrain.acquisition import scanner_shift
from training.pretrain.masking import apply_mask, random_patch_mask
from training.pretrain.objectives.common import (
    ProjectionHead,
    ReconstructionHead,
    deepest_features,
    info_nce,
    pool,
)
from training.pretrain.options import SwinSSLOptions, typed_options
from training.pretrain.registry import Objective

__all__ = ["SwinSSL", "rotate_axial"]


def rotate_axial(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each sample of ``(B, C, X, Y, Z)`` by ``k[b] * 90`` degrees in the X-Y plane.

    Parameters
    ----------
    x : torch.Tensor
        Batch of volumes in RAS (X-Y is the axial plane); ``X`` must equal ``Y``.
    k : torch.Tensor
        ``(B,)`` integers in 0..3.

    Returns
    -------
    torch.Tensor
        The rotated batch.
    """
    return torch.stack([torch.rot90(x[i], int(k[i]), dims=(1, 2)) for i in range(x.shape[0])])


class SwinSSL(Objective):
    """Rotation + contrastive + masked inpainting (Tang et al. 2022) over a 3D encoder."""

    spatial_dims = 3
    options_model = SwinSSLOptions

    def __init__(self, encoder: nn.Module, options: dict[str, Any], in_channels: int) -> None:
        super().__init__(encoder, options, in_channels)
        o = typed_options(SwinSSLOptions, self.options)
        self.mask_ratio = o.mask_ratio
        self.mask_patch = o.mask_patch
        self.temperature = o.temperature
        self.scanner_shift = o.scanner_shift
        self.weights = (o.w_rot, o.w_contrast, o.w_recon)
        self.rot_head = nn.Linear(self.feature_channels, 4)
        self.contrast_head = ProjectionHead(self.feature_channels, o.proj_dim)
        self.decoder = ReconstructionHead(
            self.feature_channels, in_channels, self.feature_stride, 3, o.decoder_width
        )

    def _view(self, image: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = image.shape[0]
        k = torch.randint(0, 4, (b,))
        target = rotate_axial(image, k)
        mask = random_patch_mask(b, image.shape[2:], self.mask_patch, self.mask_ratio, device=image.device)
        # the input may come from another scanner; the decoder still rebuilds the clean crop
        shifted = rotate_axial(scanner_shift(image, present, self.scanner_shift), k) if self.scanner_shift > 0 else target
        return apply_mask(shifted, mask), target, k.to(image.device)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the summed loss of both views and its three terms."""
        image, present = batch["image"], batch["present"]
        if image.shape[2] != image.shape[3]:
            raise ValueError(f"swin_ssl rotates in the axial plane and needs a square X-Y crop; got {list(image.shape[2:])}.")
        v1, t1, k1 = self._view(image, present)
        v2, t2, k2 = self._view(image, present)
        feats = deepest_features(self.encoder, torch.cat([v1, v2]))
        pooled = pool(feats)
        rot = F.cross_entropy(self.rot_head(pooled), torch.cat([k1, k2]))
        z = self.contrast_head(pooled)
        z1, z2 = z.chunk(2)
        contrast = info_nce(z1, z2, self.temperature)
        recon_img = self.decoder(feats)
        target = torch.cat([t1, t2])
        w = torch.cat([present, present]).view(-1, image.shape[1], 1, 1, 1)
        recon = ((recon_img - target).abs() * w).sum() / (w.sum() * target[0, 0].numel()).clamp_min(1.0)
        wr, wc, wm = self.weights
        loss = wr * rot + wc * contrast + wm * recon
        return loss, {"rot": float(rot.detach()), "contrast": float(contrast.detach()), "recon": float(recon.detach())}
