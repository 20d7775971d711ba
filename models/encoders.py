"""Encoder registry: 3D Swin, 3D ViT and 2D ViT backbones built from a config dict.

Every encoder returned by :func:`build_encoder` is an :class:`Encoder`: calling it on an
image batch ``(B, C, *spatial)`` returns a list of feature maps ``(B, C_i, *spatial_i)``,
shallowest first. ``feature_channels`` and ``feature_strides`` describe that list so that
heads (see :mod:`models.heads`) can be built for any encoder. The same module and the same
checkpoint format (:func:`save_encoder` / :func:`load_encoder`) serve pretraining,
fine-tuning and inference.

Config keys (all encoders)
--------------------------
``name``
    ``"swin3d"``, ``"vit3d"`` or ``"vit2d"``.
``in_channels``
    Number of input channels (one per MRI sequence).

``swin3d`` (MONAI ``SwinTransformer``, the SwinUNETR encoder): ``feature_size`` (default 48,
divisible by 12), ``depths`` (default ``[2, 2, 2, 2]``), ``num_heads`` (default
``[3, 6, 12, 24]``), ``window_size`` (default 7), ``patch_size`` (default 2),
``drop_path_rate`` (default 0.0), ``use_v2`` (default false). Input sizes must be divisible
by ``patch_size * 16``.

``vit3d`` / ``vit2d`` (MONAI ``ViT``): ``img_size`` (int or list), ``patch_size`` (default 16),
``hidden_size`` (768), ``mlp_dim`` (3072), ``num_layers`` (12), ``num_heads`` (12),
``out_layers`` (indices of the transformer blocks returned; default: four evenly spaced).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "ENCODER_NAMES",
    "Encoder",
    "SwinEncoder3D",
    "ViTEncoder",
    "build_encoder",
    "feature_shapes",
    "load_encoder",
    "save_encoder",
]

#: File names inside an encoder checkpoint folder.
WEIGHTS_FILE = "encoder.safetensors"
CONFIG_FILE = "encoder.json"


class Encoder(nn.Module):
    """Base class of registry encoders.

    Attributes
    ----------
    cfg : dict
        The (completed) config the encoder was built from.
    spatial_dims : int
        2 or 3.
    feature_channels : list of int
        Channels of each returned feature map, shallowest first.
    feature_strides : list of int
        Down-sampling factor of each returned feature map relative to the input.
    size_divisor : int
        Input spatial sizes must be multiples of this.
    """

    cfg: dict[str, Any]
    spatial_dims: int
    feature_channels: list[int]
    feature_strides: list[int]
    size_divisor: int

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        """Return the feature maps of ``x``, shallowest first."""
        raise NotImplementedError


class SwinEncoder3D(Encoder):
    """MONAI's SwinUNETR encoder (``SwinTransformer``) returning its five hidden states.

    Parameters
    ----------
    cfg : dict
        See the module docstring.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        fs = int(cfg.get("feature_size", 48))
        if fs % 12 != 0:
            raise ValueError(f"swin3d encoder: feature_size {fs} must be divisible by 12.")
        depths = [int(d) for d in cfg.get("depths", [2, 2, 2, 2])]
        heads = [int(h) for h in cfg.get("num_heads", [3, 6, 12, 24])]
        if len(depths) != 4 or len(heads) != 4:
            raise ValueError("swin3d encoder: depths and num_heads must each have 4 entries.")
        window = int(cfg.get("window_size", 7))
        patch = int(cfg.get("patch_size", 2))
        self.cfg = {
            **cfg,
            "name": "swin3d",
            "in_channels": int(cfg["in_channels"]),
            "feature_size": fs,
            "depths": depths,
            "num_heads": heads,
            "window_size": window,
            "patch_size": patch,
            "drop_path_rate": float(cfg.get("drop_path_rate", 0.0)),
            "use_v2": bool(cfg.get("use_v2", False)),
        }
        self.spatial_dims = 3
        self.backbone = SwinTransformer(
            in_chans=self.cfg["in_channels"],
            embed_dim=fs,
            window_size=(window,) * 3,
            patch_size=(patch,) * 3,
            depths=depths,
            num_heads=heads,
            drop_path_rate=self.cfg["drop_path_rate"],
            spatial_dims=3,
            use_v2=self.cfg["use_v2"],
        )
        self.feature_channels = [fs * 2**i for i in range(5)]
        self.feature_strides = [patch * 2**i for i in range(5)]
        self.size_divisor = patch * 16

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the five normalised hidden states (strides 2, 4, 8, 16, 32 for patch 2)."""
        out: list[torch.Tensor] = self.backbone(x, True)
        return out


class ViTEncoder(Encoder):
    """MONAI's ViT (2D or 3D) returning selected blocks' tokens as feature maps.

    Parameters
    ----------
    cfg : dict
        See the module docstring.
    spatial_dims : int
        2 or 3.
    """

    def __init__(self, cfg: dict[str, Any], spatial_dims: int) -> None:
        super().__init__()
        from monai.networks.nets import ViT

        img = cfg.get("img_size", 96 if spatial_dims == 3 else 224)
        img_size = [int(img)] * spatial_dims if isinstance(img, int) else [int(s) for s in img]
        patch = int(cfg.get("patch_size", 16))
        for s in img_size:
            if s % patch != 0:
                raise ValueError(f"vit encoder: img_size {img_size} must be divisible by patch_size {patch}.")
        layers = int(cfg.get("num_layers", 12))
        default_out = sorted({max(0, layers * k // 4 - 1) for k in range(1, 5)})
        out_layers = [int(i) for i in cfg.get("out_layers", default_out)]
        if any(i < 0 or i >= layers for i in out_layers):
            raise ValueError(f"vit encoder: out_layers {out_layers} must lie in 0..{layers - 1}.")
        self.cfg = {
            **cfg,
            "name": "vit3d" if spatial_dims == 3 else "vit2d",
            "in_channels": int(cfg["in_channels"]),
            "img_size": img_size,
            "patch_size": patch,
            "hidden_size": int(cfg.get("hidden_size", 768)),
            "mlp_dim": int(cfg.get("mlp_dim", 3072)),
            "num_layers": layers,
            "num_heads": int(cfg.get("num_heads", 12)),
            "out_layers": out_layers,
        }
        self.spatial_dims = spatial_dims
        self.backbone = ViT(
            in_channels=self.cfg["in_channels"],
            img_size=img_size,
            patch_size=patch,
            hidden_size=self.cfg["hidden_size"],
            mlp_dim=self.cfg["mlp_dim"],
            num_layers=layers,
            num_heads=self.cfg["num_heads"],
            spatial_dims=spatial_dims,
            classification=False,
        )
        self.grid = [s // patch for s in img_size]
        self.feature_channels = [self.cfg["hidden_size"]] * len(out_layers)
        self.feature_strides = [patch] * len(out_layers)
        self.size_divisor = patch

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the tokens of ``out_layers`` reshaped to ``(B, hidden, *grid)``."""
        if list(x.shape[2:]) != self.cfg["img_size"]:
            raise ValueError(
                f"vit encoder: input size {list(x.shape[2:])} differs from its img_size {self.cfg['img_size']}."
            )
        _, hidden = self.backbone(x)
        maps = []
        for i in self.cfg["out_layers"]:
            tokens = hidden[i]  # (B, N, hidden)
            b, _, c = tokens.shape
            maps.append(tokens.transpose(1, 2).reshape(b, c, *self.grid))
        return maps


_REGISTRY: dict[str, Callable[[dict[str, Any]], Encoder]] = {
    "swin3d": SwinEncoder3D,
    "vit3d": lambda cfg: ViTEncoder(cfg, 3),
    "vit2d": lambda cfg: ViTEncoder(cfg, 2),
}

#: Names accepted by :func:`build_encoder`.
ENCODER_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def build_encoder(cfg: dict[str, Any]) -> Encoder:
    """Build an encoder from its config dict.

    Parameters
    ----------
    cfg : dict
        Must hold ``name`` (one of :data:`ENCODER_NAMES`) and ``in_channels``; see the
        module docstring for the other keys.

    Returns
    -------
    Encoder
        The encoder; its ``cfg`` attribute holds the completed config.

    Raises
    ------
    ValueError
        If the name is unknown (with a did-you-mean hint) or a key is missing or invalid.
    """
    name = str(cfg.get("name", ""))
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, ENCODER_NAMES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"encoder name {name!r} is not one of {', '.join(ENCODER_NAMES)}.{hint}")
    if "in_channels" not in cfg:
        raise ValueError(f"encoder config for {name!r} lacks 'in_channels'.")
    return _REGISTRY[name](dict(cfg))


def save_encoder(path: str | Path, encoder: Encoder, cfg: dict[str, Any] | None = None) -> Path:
    """Write ``<path>/encoder.safetensors`` and ``<path>/encoder.json``.

    Parameters
    ----------
    path : str or Path
        A folder (created if missing).
    encoder : Encoder
        The encoder whose state dict is saved.
    cfg : dict, optional
        The config to store; ``encoder.cfg`` when omitted. Extra keys (for example the
        pretraining method and step) are kept.

    Returns
    -------
    Path
        The folder.
    """
    from safetensors.torch import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    stored = dict(encoder.cfg)
    if cfg:
        stored.update(cfg)
    (folder / CONFIG_FILE).write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
    return folder


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Encoder, dict[str, Any]]:
    """Load an encoder written by :func:`save_encoder`.

    Parameters
    ----------
    path : str or Path
        The checkpoint folder.
    map_location : str or torch.device
        Device for the loaded tensors.

    Returns
    -------
    tuple of (Encoder, dict)
        The encoder with its weights, and the stored config.

    Raises
    ------
    FileNotFoundError
        If the folder lacks ``encoder.json`` or ``encoder.safetensors``.
    ValueError
        If the weights do not fit the config.
    """
    from safetensors.torch import load_file

    folder = Path(path)
    for fname in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / fname).is_file():
            raise FileNotFoundError(f"encoder checkpoint {folder} has no {fname}.")
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    encoder = build_encoder(cfg)
    state = load_file(str(folder / WEIGHTS_FILE), device=str(map_location))
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"encoder checkpoint {folder}: weights do not fit its config ({exc}).") from exc
    return encoder, cfg


def feature_shapes(encoder: Encoder, spatial: Sequence[int]) -> list[tuple[int, ...]]:
    """Return the feature map shapes (without batch) for an input of ``spatial`` size.

    Parameters
    ----------
    encoder : Encoder
        A registry encoder.
    spatial : sequence of int
        Input spatial size.

    Returns
    -------
    list of tuple of int
        ``(channels, *spatial_i)`` per returned map.
    """
    return [
        (c, *(int(s) // st for s in spatial))
        for c, st in zip(encoder.feature_channels, encoder.feature_strides, strict=True)
    ]
