"""``cross_sequence``: multi-sequence pretraining after BrainMVP (Rui et al. 2024).

For every subject of the batch two acquired sequences ``s`` and ``t`` are drawn. View A
keeps only ``s`` (other channels zero, as with sequence dropout at fine-tuning time), view B
only ``t``; each view also has random patches hidden. From view A a light decoder
reconstructs sequence ``t`` (cross-sequence synthesis, whole crop) and the hidden patches of
``s``; from view B the converse. A modality-aware contrastive loss pulls the pooled
embeddings of the two views of one subject together and pushes other subjects away, so the
encoder learns anatomy shared across contrasts.

``loss = w_cross * cross + w_mask * masked + w_contrast * contrast``.

Options: ``mask_ratio`` (0.5), ``mask_patch`` (8), ``temperature`` (0.2), ``w_cross``,
``w_mask``, ``w_contrast`` (1.0), ``proj_dim`` (128), ``decoder_width`` (64).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from training.pretrain.masking import apply_mask, masked_mse, random_patch_mask
from training.pretrain.objectives.common import ProjectionHead, ReconstructionHead, deepest_features, info_nce
from training.pretrain.options import CrossSequenceOptions, typed_options
from training.pretrain.registry import Objective

__all__ = ["CrossSequence", "pick_two_sequences"]


def pick_two_sequences(present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw two different acquired channels per sample.

    Parameters
    ----------
    present : torch.Tensor
        ``(B, C)`` 0/1 channel availability; every row needs at least two ones.

    Returns
    -------
    tuple of torch.Tensor
        ``(source, target)`` channel indices, each ``(B,)``.

    Raises
    ------
    ValueError
        If a sample has fewer than two acquired sequences.
    """
    if bool((present.sum(dim=1) < 2).any()):
        raise ValueError("cross_sequence needs two or more acquired sequences per subject.")
    scores = torch.rand(present.shape, device=present.device) + 2.0 * present
    top = scores.topk(2, dim=1).indices
    return top[:, 0], top[:, 1]


class CrossSequence(Objective):
    """Cross-sequence reconstruction + masked modelling + modality-aware contrast."""

    spatial_dims = 3
    options_model = CrossSequenceOptions
    min_sequences = 2

    def __init__(self, encoder: nn.Module, options: dict[str, Any], in_channels: int) -> None:
        super().__init__(encoder, options, in_channels)
        o = typed_options(CrossSequenceOptions, self.options)
        self.mask_ratio = o.mask_ratio
        self.mask_patch = o.mask_patch
        self.temperature = o.temperature
        self.weights = (o.w_cross, o.w_mask, o.w_contrast)
        self.decoder = ReconstructionHead(
            self.feature_channels, in_channels, self.feature_stride, 3, o.decoder_width
        )
        self.contrast_head = ProjectionHead(self.feature_channels, o.proj_dim)

    @staticmethod
    def _only(image: torch.Tensor, channel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        onehot = torch.nn.functional.one_hot(channel, image.shape[1]).to(image.dtype)
        return image * onehot.view(*onehot.shape, *([1] * (image.ndim - 2))), onehot

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the loss over both directions (s→t and t→s) and its terms."""
        image = batch["image"]
        b = image.shape[0]
        src, tgt = pick_two_sequences(batch["present"])
        a, onehot_a = self._only(image, src)
        c, onehot_b = self._only(image, tgt)
        mask_a = random_patch_mask(b, image.shape[2:], self.mask_patch, self.mask_ratio, device=image.device)
        mask_b = random_patch_mask(b, image.shape[2:], self.mask_patch, self.mask_ratio, device=image.device)
        views = torch.cat([apply_mask(a, mask_a), apply_mask(c, mask_b)])
        feats = deepest_features(self.encoder, views)
        recon = self.decoder(feats)
        rec_a, rec_b = recon.chunk(2)
        ones = torch.ones_like(mask_a)
        # cross: from s predict t everywhere, and from t predict s everywhere
        cross = 0.5 * (masked_mse(rec_a, image, ones, onehot_b) + masked_mse(rec_b, image, ones, onehot_a))
        # masked: each view's own hidden patches
        masked = 0.5 * (masked_mse(rec_a, image, mask_a, onehot_a) + masked_mse(rec_b, image, mask_b, onehot_b))
        z = self.contrast_head(feats)
        za, zb = z.chunk(2)
        contrast = info_nce(za, zb, self.temperature)
        wc, wm, wk = self.weights
        loss = wc * cross + wm * masked + wk * contrast
        return loss, {"cross": float(cross.detach()), "masked": float(masked.detach()), "contrast": float(contrast.detach())}
