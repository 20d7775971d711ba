"""Pretraining run configuration: one TOML file, read and checked at the entry point.

Layout (every table but ``encoder`` and ``data`` has defaults)::

    objective = "swin_ssl"           # swin_ssl | cross_sequence | prism | dino2d
    seed = 0
    [encoder]                        # models.encoders.build_encoder keys; in_channels
    name = "swin3d"                  # defaults to the number of sequences
    feature_size = 12
    [options]                        # the objective's own options (training.pretrain.options)
    mask_ratio = 0.5
    [data]
    sources = ["var/synth/pretrain"] # subject folders, manifests; paths relative to the CWD
    synth = {subjects = 8, seed = 1000}  # optional: generate subjects in memory
    sequences = ["T1", "T1C", "T2", "FLAIR"]
    voxel_mm = 2.0
    patch = [64, 64, 64]
    batch_size = 2
    workers = 0
    [optim]
    lr = 1e-3
    weight_decay = 0.05
    warmup_steps = 10
    max_steps = 1000
    grad_clip = 1.0
    [run]
    out_dir = "var/pretrain/swin_ssl"
    threads = 2
    log_every = 10
    checkpoint_every = 200
    [[stages]]                       # optional: successive data (BrainSegFounder's two stages)
    name = "general"
    steps = 500
    data = {sources = ["var/synth/healthy"]}   # overrides of [data]

Every table is a typed model (:class:`PretrainFile`; the options are checked against
the objective's model in :mod:`training.pretrain.options`): an unknown key stops the run
with ``config key 'optim.warmup_step': unknown key (did you mean 'warmup_steps'?)``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from dicom_node.typed_config import StrictModel, error_sentences, load_toml
from training.pretrain.options import OPTIONS, ObjectiveOptions, objective_options

__all__ = [
    "DataPatch",
    "DataTable",
    "OptimTable",
    "PretrainConfig",
    "PretrainFile",
    "RunTable",
    "Stage",
    "StageTable",
    "load_config",
    "parse_config",
]

_SEQUENCES = ["T1", "T1C", "T2", "FLAIR"]


class DataTable(StrictModel):
    """``[data]``: where the subjects come from and how they are cut."""

    sources: list[str] = Field(default_factory=list, description="subject folders and manifests")
    synth: dict[str, Any] = Field(default_factory=dict, description="subjects generated in memory (subjects, seed)")
    sequences: list[str] = Field(default_factory=lambda: list(_SEQUENCES), min_length=1)
    voxel_mm: float = Field(default=2.0, gt=0)
    patch: list[int] = Field(default_factory=lambda: [64, 64, 64], min_length=2, max_length=3)
    batch_size: int = Field(default=2, ge=1)
    workers: int = Field(default=0, ge=0)


class DataPatch(StrictModel):
    """A stage's ``data`` table: keys of ``[data]`` that the stage replaces."""

    sources: list[str] | None = None
    synth: dict[str, Any] | None = None
    sequences: list[str] | None = Field(default=None, min_length=1)
    voxel_mm: float | None = Field(default=None, gt=0)
    patch: list[int] | None = Field(default=None, min_length=2, max_length=3)
    batch_size: int | None = Field(default=None, ge=1)
    workers: int | None = Field(default=None, ge=0)


class OptimTable(StrictModel):
    """``[optim]``: AdamW with a linear warm-up and a cosine decay."""

    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_steps: int = Field(default=10, ge=0)
    max_steps: int = Field(default=100, ge=0, description="steps of a run without [[stages]]")
    grad_clip: float = Field(default=1.0, ge=0, description="0: no clipping")


class RunTable(StrictModel):
    """``[run]``: where and how often the run writes."""

    out_dir: str = ""
    threads: int = Field(default=2, ge=1)
    log_every: int = Field(default=10, ge=1)
    checkpoint_every: int = Field(default=200, ge=1)


class StageTable(StrictModel):
    """One ``[[stages]]`` entry."""

    name: str = ""
    steps: int = Field(ge=0)
    data: DataPatch = Field(default_factory=DataPatch)


class PretrainFile(StrictModel):
    """The whole pretraining TOML file, as written (see the module docstring)."""

    objective: str
    seed: int = 0
    encoder: dict[str, Any] = Field(description="models.encoders.build_encoder keys")
    options: dict[str, Any] = Field(default_factory=dict, description="the objective's options")
    data: DataTable
    optim: OptimTable = Field(default_factory=OptimTable)
    run: RunTable = Field(default_factory=RunTable)
    stages: list[StageTable] = Field(default_factory=list)

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, name: str) -> str:
        if name not in OPTIONS:
            close = difflib.get_close_matches(name, list(OPTIONS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"pretraining objective {name!r} is not one of {', '.join(OPTIONS)}.{hint}")
        return name


@dataclass
class Stage:
    """One stage of a run: a name, a number of steps and its data table."""

    name: str
    steps: int
    data: DataTable


@dataclass
class PretrainConfig:
    """A checked pretraining config (see the module docstring)."""

    path: Path
    objective: str
    seed: int
    encoder: dict[str, Any]
    options: ObjectiveOptions
    optim: OptimTable
    run: RunTable
    stages: list[Stage]
    raw: dict[str, Any]

    @property
    def total_steps(self) -> int:
        """Steps over all stages."""
        return sum(s.steps for s in self.stages)

    def cap_steps(self, max_steps: int) -> None:
        """Cut the stages so that the run stops after ``max_steps`` steps in total."""
        left = max_steps
        kept = []
        for stage in self.stages:
            if left <= 0:
                break
            kept.append(Stage(stage.name, min(stage.steps, left), stage.data))
            left -= stage.steps
        self.stages = kept


def load_config(path: str | Path) -> PretrainConfig:
    """Read and check a pretraining TOML file.

    Parameters
    ----------
    path : str or Path
        The config file.

    Returns
    -------
    PretrainConfig
        With defaults filled in.

    Raises
    ------
    ValueError
        If the file is missing, is not TOML, or has an unknown or invalid key; the message
        names the file and the key (with the nearest known key for a misspelt one).
    """
    return parse_config(load_toml(path, "pretraining config"), Path(path))


def parse_config(raw: dict[str, Any], path: str | Path = "<dict>") -> PretrainConfig:
    """Check a pretraining config given as a dict (the parsed TOML).

    Parameters
    ----------
    raw : dict
        The config tables.
    path : str or Path
        Where it came from, for messages.

    Returns
    -------
    PretrainConfig
        With defaults filled in.

    Raises
    ------
    ValueError
        If a key is unknown or invalid (one ``config key '...'`` sentence per problem).
    """
    p = Path(path)
    where = f"pretraining config {p}"
    try:
        file = PretrainFile.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{where}: " + " ".join(error_sentences(exc, PretrainFile))) from None
    options = objective_options(file.objective, file.options, where)
    encoder = dict(file.encoder)
    encoder.setdefault("in_channels", len(file.data.sequences))
    if int(encoder["in_channels"]) != len(file.data.sequences):
        raise ValueError(
            f"{where}: config key 'encoder.in_channels': {encoder['in_channels']} differs from the "
            f"{len(file.data.sequences)} sequences of [data]."
        )
    stages = [
        Stage(st.name or f"stage{i + 1}", st.steps,
              file.data.model_copy(update=st.data.model_dump(exclude_none=True)))
        for i, st in enumerate(file.stages)
    ]
    if not stages:
        stages = [Stage("main", file.optim.max_steps, file.data)]
    run = file.run if file.run.out_dir else file.run.model_copy(update={"out_dir": f"var/pretrain/{p.stem}"})
    return PretrainConfig(
        path=p,
        objective=file.objective,
        seed=file.seed,
        encoder=encoder,
        options=options,
        optim=file.optim,
        run=run,
        stages=stages,
        raw=raw,
    )
