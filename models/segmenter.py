"""Segmentation network: a registry encoder plus the SwinUNETR-style decoder.

Config dict::

    {
      "encoder": {"name": "swin3d", "in_channels": 4, "feature_size": 12, ...},
      "num_classes": 4,                 # background + labels
      "norm": "instance",               # optional
      "full_resolution": true,          # optional: false decodes to stride 2 and up-samples logits
      "encoder_checkpoint": "path/"     # optional: folder written by save_encoder
    }
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.encoders import Encoder, build_encoder, load_encoder
from models.heads import SegmentationDecoder

__all__ = ["Segmenter", "build_segmenter"]


class Segmenter(nn.Module):
    """Encoder + segmentation decoder.

    Parameters
    ----------
    encoder : Encoder
        A registry encoder.
    num_classes : int
        Output channels (background included).
    norm : str
        MONAI norm name for the decoder.

    Attributes
    ----------
    size_divisor : int
        Input spatial sizes must be multiples of this.
    """

    def __init__(self, encoder: Encoder, num_classes: int, norm: str = "instance", full_resolution: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = SegmentationDecoder(
            encoder.spatial_dims,
            int(encoder.cfg["in_channels"]),
            encoder.feature_channels,
            encoder.feature_strides,
            num_classes,
            norm=norm,
            full_resolution=full_resolution,
        )
        self.size_divisor = encoder.size_divisor
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, num_classes, *x.shape[2:])``."""
        for s in x.shape[2:]:
            if int(s) % self.size_divisor != 0:
                raise ValueError(
                    f"segmenter input size {list(x.shape[2:])} must be a multiple of {self.size_divisor}."
                )
        out: torch.Tensor = self.decoder(x, self.encoder(x))
        return out


def build_segmenter(cfg: dict[str, Any]) -> Segmenter:
    """Build a segmenter from its config dict, loading an encoder checkpoint if named.

    Parameters
    ----------
    cfg : dict
        See the module docstring.

    Returns
    -------
    Segmenter
        The network (in training mode).

    Raises
    ------
    ValueError
        If the config lacks ``encoder`` or ``num_classes``, or the checkpoint's input
        channels differ from the config's.
    """
    if "encoder" not in cfg or "num_classes" not in cfg:
        raise ValueError("segmenter config needs 'encoder' (a dict) and 'num_classes'.")
    enc_cfg = dict(cfg["encoder"])
    ckpt = cfg.get("encoder_checkpoint")
    if ckpt:
        encoder, stored = load_encoder(Path(ckpt))
        want = enc_cfg.get("in_channels", stored["in_channels"])
        if int(stored["in_channels"]) != int(want):
            raise ValueError(
                f"encoder checkpoint {ckpt} takes {stored['in_channels']} input channels but the config asks for {want}."
            )
    else:
        encoder = build_encoder(enc_cfg)
    return Segmenter(
        encoder, int(cfg["num_classes"]), norm=str(cfg.get("norm", "instance")),
        full_resolution=bool(cfg.get("full_resolution", True)),
    )
