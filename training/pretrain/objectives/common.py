"""Heads and losses shared by the pretraining objectives.

The heads are thrown away after pretraining; only the encoder is saved. They work on the
encoder's deepest feature map, whatever the encoder (Swin or ViT, 2D or 3D), using the
registry's ``feature_channels`` / ``feature_strides`` description.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ProjectionHead",
    "ReconstructionHead",
    "deepest_features",
    "info_nce",
    "pool",
]


def deepest_features(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run the encoder and return its deepest feature map ``(B, C, *grid)``.

    Parameters
    ----------
    encoder : nn.Module
        Returns a list of feature maps (registry encoders, MONAI ``SwinTransformer``) or a
        single feature map.
    x : torch.Tensor
        Input ``(B, C, *spatial)``.

    Returns
    -------
    torch.Tensor
        The last feature map.
    """
    out = encoder(x)
    if isinstance(out, list | tuple):
        out = out[-1]
    return out


def pool(features: torch.Tensor) -> torch.Tensor:
    """Global average pool ``(B, C, *grid)`` to ``(B, C)``."""
    return features.flatten(2).mean(dim=2)


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv3d if dims == 3 else nn.Conv2d


class ReconstructionHead(nn.Module):
    """Light progressive decoder from a feature map back to image resolution.

    ``log2(stride)`` blocks of (×2 upsampling, 3-wide convolution, GELU), with channels halving
    from ``width`` down to at least 8, then a 1-wide convolution to ``out_channels``.

    Parameters
    ----------
    in_channels : int
        Channels of the feature map.
    out_channels : int
        Image channels to reconstruct.
    stride : int
        Down-sampling factor of the feature map (a power of two).
    dims : int
        2 or 3.
    width : int
        Channels of the first block.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dims: int = 3, width: int = 64) -> None:
        super().__init__()
        steps = round(math.log2(stride))
        if 2**steps != stride:
            raise ValueError(f"reconstruction head: stride {stride} is not a power of two.")
        conv = _conv(dims)
        self.dims = dims
        layers: list[nn.Module] = [conv(in_channels, width, 1)]
        ch = width
        self.blocks = nn.ModuleList()
        for _ in range(steps):
            nxt = max(8, ch // 2)
            self.blocks.append(nn.Sequential(conv(ch, nxt, 3, padding=1), nn.GELU()))
            ch = nxt
        self.proj = nn.Sequential(*layers)
        self.out = conv(ch, out_channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return the reconstruction ``(B, out_channels, *spatial)``."""
        mode = "trilinear" if self.dims == 3 else "bilinear"
        h = self.proj(features)
        for block in self.blocks:
            h = block(F.interpolate(h, scale_factor=2, mode=mode, align_corners=False))
        result: torch.Tensor = self.out(h)
        return result


class ProjectionHead(nn.Module):
    """Pool + MLP projection (contrastive or regression head).

    Parameters
    ----------
    in_channels : int
        Channels of the pooled feature.
    out_dim : int
        Output size.
    hidden : int
        Hidden width.
    """

    def __init__(self, in_channels: int, out_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Project a feature map ``(B, C, *grid)`` or a pooled ``(B, C)`` vector."""
        v = pool(features) if features.ndim > 2 else features
        result: torch.Tensor = self.mlp(v)
        return result


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Symmetric InfoNCE (NT-Xent) between two batches of embeddings.

    Row ``i`` of ``z1`` and row ``i`` of ``z2`` are positives; every other row of the batch
    is a negative.

    Parameters
    ----------
    z1, z2 : torch.Tensor
        ``(B, D)`` embeddings of two views.
    temperature : float
        Softmax temperature.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    a = F.normalize(z1, dim=1)
    b = F.normalize(z2, dim=1)
    logits = a @ b.t() / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
