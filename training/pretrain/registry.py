"""Pretraining objectives, pluggable by name over the shared encoders.

An objective is an ``nn.Module`` that owns an encoder from :mod:`models.encoders` plus the
heads its method needs. ``forward(batch)`` returns ``(loss, parts)`` where ``parts`` holds
the loss terms as floats for logging; ``after_step(step, max_steps)`` is called after each
optimiser step (the EMA teacher of ``dino2d`` uses it). Only ``objective.encoder`` is saved.

Names: ``swin_ssl`` (BrainSegFounder / Tang et al. 2022), ``cross_sequence`` (BrainMVP),
``prism`` (PRISM), ``dino2d`` (BrainDINO, MRI-CORE).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import torch
from torch import nn

from training.pretrain.options import ObjectiveOptions, typed_options

__all__ = ["OBJECTIVES", "Objective", "build_objective", "objective_class"]

#: Objective name -> "module:class" (imported on demand).
OBJECTIVES: dict[str, str] = {
    "swin_ssl": "training.pretrain.objectives.swin_ssl:SwinSSL",
    "cross_sequence": "training.pretrain.objectives.cross_sequence:CrossSequence",
    "prism": "training.pretrain.objectives.prism:Prism",
    "dino2d": "training.pretrain.objectives.dino2d:Dino2D",
}


class Objective(nn.Module):
    """Base class of pretraining objectives.

    Parameters
    ----------
    encoder : nn.Module
        A registry encoder (has ``feature_channels``, ``feature_strides``, ``spatial_dims``).
    options : ObjectiveOptions or dict
        The config's ``[options]`` table, validated against :attr:`options_model` (unknown
        keys refused).
    in_channels : int
        Image channels (one per sequence of the layout).

    Attributes
    ----------
    spatial_dims : int
        3 for volume objectives, 2 for slice objectives; the data loader follows it.
    min_sequences : int
        Fewest sequences a subject needs to be used.
    """

    spatial_dims: int = 3
    min_sequences: int = 1

    #: The model of this objective's ``[options]`` (see :mod:`training.pretrain.options`).
    options_model: type[ObjectiveOptions] = ObjectiveOptions

    def __init__(self, encoder: nn.Module, options: ObjectiveOptions | dict[str, Any] | None,
                 in_channels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.options: ObjectiveOptions = typed_options(self.options_model, options, f"{type(self).__name__} options")
        self.in_channels = int(in_channels)
        self.feature_channels = int(encoder.feature_channels[-1])  # type: ignore[index]
        self.feature_stride = int(encoder.feature_strides[-1])  # type: ignore[index]
        enc_dims = int(getattr(encoder, "spatial_dims", 3))
        if enc_dims != self.spatial_dims:
            raise ValueError(
                f"objective {type(self).__name__} needs a {self.spatial_dims}D encoder; "
                f"the configured encoder is {enc_dims}D."
            )

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:  # pragma: no cover
        """Return the loss of one batch and its named terms."""
        raise NotImplementedError

    def after_step(self, step: int, max_steps: int) -> None:
        """Hook run after each optimiser step (no-op by default)."""


def objective_class(name: str) -> type[Objective]:
    """Return the class registered under ``name``.

    Raises
    ------
    ValueError
        If the name is unknown (with a did-you-mean hint).
    """
    if name not in OBJECTIVES:
        close = difflib.get_close_matches(name, list(OBJECTIVES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"pretraining objective {name!r} is not one of {', '.join(OBJECTIVES)}.{hint}")
    module, cls = OBJECTIVES[name].split(":")
    found: type[Objective] = getattr(importlib.import_module(module), cls)
    return found


def build_objective(name: str, encoder: nn.Module, options: ObjectiveOptions | dict[str, Any] | None,
                    in_channels: int) -> Objective:
    """Build the objective ``name`` around ``encoder``.

    Parameters
    ----------
    name : str
        One of :data:`OBJECTIVES`.
    encoder : nn.Module
        A registry encoder.
    options : ObjectiveOptions or dict
        Method options (validated by the objective's options model).
    in_channels : int
        Image channels.

    Returns
    -------
    Objective
        The objective module.
    """
    return objective_class(name)(encoder, options, in_channels)
