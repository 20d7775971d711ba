"""Fine-tuning a pretrained slice encoder the BrainDINO / MRI-CORE way: a frozen encoder with a
light head, or LoRA adapters (Hu et al. 2021) on its linear layers.

:func:`add_lora` wraps ``nn.Linear`` layers in place; only the adapters (and the head) then
train. :class:`SliceSegmenter` puts a light segmentation head on a 2D encoder's deepest map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRALinear", "SliceSegmenter", "add_lora", "freeze", "trainable_parameters"]


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / rank) * B A``.

    Parameters
    ----------
    base : nn.Linear
        The layer to adapt; its weights are frozen.
    rank : int
        Rank of the update.
    alpha : float
        Scale of the update.
    """

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive; got {rank}.")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / rank**0.5)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``base(x) + scale * x A^T B^T``."""
        result: torch.Tensor = self.base(x) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)
        return result


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients for every parameter of ``module``; return it."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def add_lora(
    module: nn.Module, rank: int = 4, alpha: float = 8.0, targets: Sequence[str] = ("qkv", "out_proj")
) -> int:
    """Freeze ``module`` and wrap its ``nn.Linear`` children named in ``targets`` with LoRA.

    Parameters
    ----------
    module : nn.Module
        An encoder (MONAI ViT attention layers name their projections ``qkv`` and ``out_proj``).
    rank, alpha : int, float
        LoRA rank and scale.
    targets : sequence of str
        Attribute names of the linear layers to adapt.

    Returns
    -------
    int
        How many layers were adapted.

    Raises
    ------
    ValueError
        If no layer matched ``targets``.
    """
    freeze(module)
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, rank, alpha))
                count += 1
    if count == 0:
        raise ValueError(f"add_lora: no nn.Linear layer named {', '.join(targets)} in {type(module).__name__}.")
    return count


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Return the parameters of ``module`` that require gradients."""
    return [p for p in module.parameters() if p.requires_grad]


class SliceSegmenter(nn.Module):
    """A 2D encoder with a light segmentation head on its deepest feature map.

    Parameters
    ----------
    encoder : nn.Module
        A 2D registry encoder (``vit2d``): returns a list of ``(B, C, h, w)`` maps.
    num_classes : int
        Output classes (background included).
    mode : str
        ``"full"`` (train everything), ``"frozen"`` (encoder frozen, head only) or
        ``"lora"`` (LoRA adapters in the encoder + head).
    width : int
        Channels of the head.
    lora_rank : int
        Rank for ``mode="lora"``.
    """

    def __init__(
        self, encoder: nn.Module, num_classes: int, mode: str = "frozen", width: int = 64, lora_rank: int = 4
    ) -> None:
        super().__init__()
        if mode not in ("full", "frozen", "lora"):
            raise ValueError(f"slice segmenter mode {mode!r} is not one of full, frozen, lora.")
        self.encoder = encoder
        if mode == "frozen":
            freeze(encoder)
        elif mode == "lora":
            add_lora(encoder, lora_rank)
        channels = int(encoder.feature_channels[-1])  # type: ignore[index]
        self.stride = int(encoder.feature_strides[-1])  # type: ignore[index]
        self.head = nn.Sequential(
            nn.Conv2d(channels, width, 1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits ``(B, num_classes, H, W)``."""
        feats = self.encoder(x)
        deepest = feats[-1] if isinstance(feats, list | tuple) else feats
        logits = self.head(deepest)
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)
