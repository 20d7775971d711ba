"""The 2D arm of the label-efficiency evidence: a slice segmenter that takes 3D batches.

A :class:`training.pretrain.adapters.SliceSegmenter` (2D encoder + light head, the
BrainDINO / MRI-CORE way of fine-tuning) sees one axial slice at a time. Wrapped in
:class:`SliceAs3D` it takes ``(B, C, H, W, 1)`` crops, so the fine-tuning loop, the
label-biased crops and MONAI's sliding-window inference (window ``[h, w, 1]``) are the
ones the 3D arm uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["SliceAs3D", "build_slice_segmenter"]


class SliceAs3D(nn.Module):
    """Run a 2D network on ``(B, C, H, W, 1)`` input; return ``(B, K, H, W, 1)``.

    Parameters
    ----------
    net : nn.Module
        A 2D segmenter.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the 2D network to the single slice of ``x``."""
        if x.ndim != 5 or x.shape[-1] != 1:
            raise ValueError(f"slice segmenter input must be (B, C, H, W, 1); got {list(x.shape)}.")
        out: torch.Tensor = self.net(x[..., 0])
        return out[..., None]


def build_slice_segmenter(cfg: dict[str, Any]) -> SliceAs3D:
    """Build a 2D slice segmenter from a config dict.

    Parameters
    ----------
    cfg : dict
        ``encoder`` (a ``vit2d`` registry config), ``num_classes``, ``slice``
        (``{"mode": "full" | "frozen" | "lora", "width": 64, "lora_rank": 4}``) and optional
        ``encoder_checkpoint`` (a folder written by ``save_encoder``).

    Returns
    -------
    SliceAs3D
        The wrapped network (training mode).

    Raises
    ------
    ValueError
        If the encoder is not 2D or the checkpoint's input channels differ from the config's.
    """
    from models.encoders import build_encoder, load_encoder
    from training.pretrain.adapters import SliceSegmenter

    enc_cfg = dict(cfg["encoder"])
    ckpt = cfg.get("encoder_checkpoint")
    if ckpt:
        encoder, stored = load_encoder(Path(ckpt))
        if int(stored["in_channels"]) != int(enc_cfg.get("in_channels", stored["in_channels"])):
            raise ValueError(
                f"encoder checkpoint {ckpt} takes {stored['in_channels']} input channels but the config asks for "
                f"{enc_cfg['in_channels']}."
            )
    else:
        encoder = build_encoder(enc_cfg)
    if encoder.spatial_dims != 2:
        raise ValueError(f"a slice segmenter needs a 2D encoder; {enc_cfg.get('name')!r} is {encoder.spatial_dims}D.")
    opts = dict(cfg.get("slice") or {})
    net = SliceSegmenter(
        encoder, int(cfg["num_classes"]), mode=str(opts.get("mode", "full")), width=int(opts.get("width", 64)),
        lora_rank=int(opts.get("lora_rank", 4)),
    )
    return SliceAs3D(net)
