"""Each pretraining objective's ``[options]``: a typed table per objective (no torch here).

A pretraining config's ``[options]`` is validated against the model of its objective
when the config is read (:func:`training.pretrain.config.parse_config`), so a misspelt
option stops the run before any data is loaded, with the key and the nearest known one
(``config key 'options.mask_ratoi': unknown key (did you mean 'mask_ratio'?)``). The
objectives read their settings from these models (:func:`objective_options`).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import Field, ValidationError, model_validator

from dicom_node.typed_config import StrictModel, error_sentences

__all__ = [
    "OPTIONS",
    "CrossSequenceOptions",
    "Dino2DOptions",
    "ObjectiveOptions",
    "PrismOptions",
    "SwinSSLOptions",
    "objective_options",
    "typed_options",
]

_O = TypeVar("_O", bound="ObjectiveOptions")


class ObjectiveOptions(StrictModel):
    """Base of the objectives' options (unknown keys refused)."""


class _Masked(ObjectiveOptions):
    mask_ratio: float = Field(default=0.5, ge=0.0, lt=1.0, description="fraction of patches masked")
    mask_patch: int = Field(default=8, ge=1, description="side of a masked patch, voxels")
    decoder_width: int = Field(default=64, ge=1, description="channels of the reconstruction decoder")


class _Shifted(_Masked):
    """Masked objectives whose two views may each come from another scanner."""

    scanner_shift: float = Field(
        default=0.0, ge=0.0, le=2.0,
        description="strength of the independent scanner shift of each view (training.pretrain.acquisition); 0 is off",
    )


class SwinSSLOptions(_Shifted):
    """``swin_ssl``: rotation + contrastive + masked inpainting."""

    temperature: float = Field(default=0.2, gt=0.0)
    w_rot: float = Field(default=1.0, ge=0.0)
    w_contrast: float = Field(default=1.0, ge=0.0)
    w_recon: float = Field(default=1.0, ge=0.0)
    proj_dim: int = Field(default=128, ge=1)


class CrossSequenceOptions(_Masked):
    """``cross_sequence``: cross-sequence reconstruction + masked modelling + contrast."""

    temperature: float = Field(default=0.2, gt=0.0)
    w_cross: float = Field(default=1.0, ge=0.0)
    w_mask: float = Field(default=1.0, ge=0.0)
    w_contrast: float = Field(default=1.0, ge=0.0)
    proj_dim: int = Field(default=128, ge=1)


class PrismOptions(_Shifted):
    """``prism``: masked reconstruction + acquisition parameters + structure/sequence heads."""

    keep_prob: float = Field(default=0.6, ge=0.0, le=1.0)
    embed_dim: int = Field(default=64, ge=1)
    w_recon: float = Field(default=1.0, ge=0.0)
    w_param: float = Field(default=0.5, ge=0.0)
    w_struct: float = Field(default=0.5, ge=0.0)
    w_orth: float = Field(default=0.1, ge=0.0)


class Dino2DOptions(ObjectiveOptions):
    """``dino2d``: self-distillation with an EMA teacher and multi-crop."""

    n_global: int = Field(default=2, ge=2, description="global views (the teacher's)")
    n_local: int = Field(default=4, ge=0)
    global_scale: tuple[float, float] = (0.5, 1.0)
    local_scale: tuple[float, float] = (0.15, 0.4)
    student_temp: float = Field(default=0.1, gt=0.0)
    teacher_temp: float = Field(default=0.04, gt=0.0)
    center_momentum: float = Field(default=0.9, ge=0.0, le=1.0)
    momentum: float = Field(default=0.996, ge=0.0, le=1.0)
    prototypes: int = Field(default=1024, ge=1)
    hidden: int = Field(default=256, ge=1)
    bottleneck: int = Field(default=128, ge=1)

    @model_validator(mode="after")
    def _scales(self) -> Dino2DOptions:
        for name in ("global_scale", "local_scale"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1")
        return self


#: Objective name -> the model of its ``[options]`` (the names of :data:`training.pretrain.registry.OBJECTIVES`).
OPTIONS: dict[str, type[ObjectiveOptions]] = {
    "swin_ssl": SwinSSLOptions,
    "cross_sequence": CrossSequenceOptions,
    "prism": PrismOptions,
    "dino2d": Dino2DOptions,
}


def typed_options(model: type[_O], options: ObjectiveOptions | dict[str, Any] | None,
                  where: str = "pretraining options") -> _O:
    """Validate ``options`` against ``model`` (an instance of ``model`` is returned as it is).

    Parameters
    ----------
    model : type of ObjectiveOptions
        The objective's options model.
    options : ObjectiveOptions, dict or None
        The ``[options]`` table.
    where : str
        Names the source in messages.

    Returns
    -------
    ObjectiveOptions
        An instance of ``model``, defaults filled in.

    Raises
    ------
    ValueError
        With a ``config key 'options.<key>'`` sentence per bad key.
    """
    if isinstance(options, model):
        return options
    if isinstance(options, ObjectiveOptions):
        options = options.model_dump()
    try:
        return model.model_validate(options or {})
    except ValidationError as exc:
        raise ValueError(f"{where}: " + " ".join(error_sentences(exc, model, prefix=("options",)))) from None


def objective_options(objective: str, options: ObjectiveOptions | dict[str, Any] | None,
                      where: str = "pretraining options") -> ObjectiveOptions:
    """Validate ``options`` for the objective named ``objective`` (see :func:`typed_options`).

    Raises
    ------
    KeyError
        If ``objective`` is not a name of :data:`OPTIONS`.
    ValueError
        With a ``config key 'options.<key>'`` sentence per bad key.
    """
    return typed_options(OPTIONS[objective], options, f"{where} ({objective})")
