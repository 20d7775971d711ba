"""Heads over registry encoders: a SwinUNETR-style segmentation decoder and a classifier.

Both heads are built from an encoder's ``feature_channels`` and ``feature_strides`` (see
:class:`models.encoders.Encoder`), so they fit any registry encoder: the Swin encoder's
five-level pyramid (strides 2..32, like SwinUNETR) or a ViT's equal-stride token maps (like
UNETR, with plain up-sampling stages where no skip exists).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClassificationHead", "SegmentationDecoder"]


def _conv_cls(spatial_dims: int, transposed: bool = False) -> type[nn.Module]:
    if spatial_dims == 3:
        return nn.ConvTranspose3d if transposed else nn.Conv3d
    return nn.ConvTranspose2d if transposed else nn.Conv2d


class _ResBlock(nn.Module):
    """MONAI ``UnetResBlock`` (two 3×3 convs, instance norm, leaky ReLU, residual)."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, norm: str) -> None:
        super().__init__()
        from monai.networks.blocks.dynunet_block import UnetResBlock

        self.block = UnetResBlock(spatial_dims, in_ch, out_ch, kernel_size=3, stride=1, norm_name=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return out


class _UpBlock(nn.Module):
    """Transposed-conv up-sampling by ``factor``, optional skip concatenation, residual block."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, skip_ch: int, factor: int, norm: str) -> None:
        super().__init__()
        up_cls = _conv_cls(spatial_dims, transposed=True)
        self.up = up_cls(in_ch, out_ch, kernel_size=factor, stride=factor, bias=False)
        self.res = _ResBlock(spatial_dims, out_ch + skip_ch, out_ch, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        out: torch.Tensor = self.res(x)
        return out


class SegmentationDecoder(nn.Module):
    """SwinUNETR-style decoder: residual skip blocks, transposed-conv up-sampling, 1×1 output.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels : int
        Channels of the network input (a full-resolution stem block sees the image, as in
        SwinUNETR's ``encoder1``).
    feature_channels, feature_strides : sequence of int
        From the encoder, shallowest first; strides are non-decreasing powers of two.
    out_channels : int
        Number of classes (background included).
    norm : str
        MONAI norm name (default ``"instance"``).
    full_resolution : bool
        True (SwinUNETR): decode up to the input resolution with a full-resolution stem
        block on the image. False (for CPU budgets): stop at the shallowest feature stride
        and up-sample the logits trilinearly; most of the convolution cost lies at full
        resolution, so this trains and runs several times faster.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        feature_channels: Sequence[int],
        feature_strides: Sequence[int],
        out_channels: int,
        norm: str = "instance",
        full_resolution: bool = True,
    ) -> None:
        super().__init__()
        chans = [int(c) for c in feature_channels]
        strides = [int(s) for s in feature_strides]
        if len(chans) != len(strides) or not chans:
            raise ValueError("segmentation decoder: feature_channels and feature_strides must match and be non-empty.")
        if any(b < a for a, b in itertools.pairwise(strides)):
            raise ValueError(f"segmentation decoder: feature strides {strides} must be non-decreasing.")
        base = max(8, chans[0] // 2 if strides[0] == 1 else chans[0])
        self.full_resolution = full_resolution
        self.out_stride = 1 if full_resolution else strides[0]
        self.stem = _ResBlock(spatial_dims, in_channels, base, norm) if full_resolution else None
        self.skips = nn.ModuleList([_ResBlock(spatial_dims, c, c, norm) for c in chans])
        ups: list[nn.Module] = []
        cur = chans[-1]
        for i in range(len(chans) - 2, -1, -1):
            factor = strides[i + 1] // strides[i]
            ups.append(_UpBlock(spatial_dims, cur, chans[i], chans[i], max(1, factor), norm))
            cur = chans[i]
        self.ups = nn.ModuleList(ups)
        final: list[nn.Module] = []
        stride = strides[0] if full_resolution else 1
        while stride > 1:
            stride //= 2
            out_ch = base if stride == 1 else max(base, cur // 2)
            final.append(_UpBlock(spatial_dims, cur, out_ch, base if stride == 1 else 0, 2, norm))
            cur = out_ch
        if not final and full_resolution:  # features already at full resolution: fuse the stem
            final.append(_ResBlock(spatial_dims, cur + base, base, norm))
            cur = base
        self.final = nn.ModuleList(final)
        self.out = _conv_cls(spatial_dims)(cur, out_channels, kernel_size=1)

    def forward(self, image: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return logits ``(B, out_channels, *image.shape[2:])``.

        Parameters
        ----------
        image : torch.Tensor
            The network input.
        features : sequence of torch.Tensor
            The encoder's feature maps, shallowest first.
        """
        stem = self.stem(image) if self.stem is not None else None
        skips = [blk(f) for blk, f in zip(self.skips, features, strict=True)]
        x = skips[-1]
        for j, up in enumerate(self.ups):
            x = up(x, skips[len(skips) - 2 - j])
        for k, blk in enumerate(self.final):
            last = k == len(self.final) - 1
            if isinstance(blk, _UpBlock):
                x = blk(x, stem if last else None)
            elif stem is not None:
                x = blk(torch.cat([x, stem], dim=1))
        out: torch.Tensor = self.out(x)
        if self.out_stride > 1:
            mode = "trilinear" if out.ndim == 5 else "bilinear"
            out = F.interpolate(out, size=tuple(image.shape[2:]), mode=mode, align_corners=False)
        return out


class ClassificationHead(nn.Module):
    """Global-average-pooled features of every level, concatenated, then an MLP.

    Parameters
    ----------
    feature_channels : sequence of int
        From the encoder.
    num_classes : int
        Number of output logits.
    hidden : int
        Width of the hidden layer (0 for a single linear layer).
    dropout : float
        Dropout before the last layer.
    """

    def __init__(self, feature_channels: Sequence[int], num_classes: int, hidden: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        total = int(sum(feature_channels))
        layers: list[nn.Module] = []
        if hidden > 0:
            layers += [nn.Linear(total, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)]
        else:
            layers += [nn.Dropout(dropout), nn.Linear(total, num_classes)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return logits ``(B, num_classes)``."""
        pooled = [f.flatten(2).mean(dim=2) for f in features]
        out: torch.Tensor = self.mlp(torch.cat(pooled, dim=1))
        return out
