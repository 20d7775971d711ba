"""Pretraining run configuration: one TOML file, read and checked at the entry point.

Layout (every table but ``encoder`` and ``data`` has defaults)::

    objective = "swin_ssl"           # swin_ssl | cross_sequence | prism | dino2d
    seed = 0
    [encoder]                        # models.encoders.build_encoder keys; in_channels
    name = "swin3d"                  # defaults to the number of sequences
    feature_size = 12
    [options]                        # the objective's own options (see its module)
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
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PretrainConfig", "Stage", "load_config", "parse_config"]

_TOP = {"objective", "seed", "encoder", "options", "data", "optim", "run", "stages"}
_DATA = {"sources", "synth", "sequences", "voxel_mm", "patch", "batch_size", "workers"}
_OPTIM = {"lr", "weight_decay", "warmup_steps", "max_steps", "grad_clip"}
_RUN = {"out_dir", "threads", "log_every", "checkpoint_every"}


@dataclass
class Stage:
    """One stage of a run: a name, a number of steps and its data table."""

    name: str
    steps: int
    data: dict[str, Any]


@dataclass
class PretrainConfig:
    """A checked pretraining config (see the module docstring)."""

    path: Path
    objective: str
    seed: int
    encoder: dict[str, Any]
    options: dict[str, Any]
    optim: dict[str, Any]
    run: dict[str, Any]
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


def _check_keys(table: dict[str, Any], allowed: set[str], where: str, path: Path) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"pretraining config {path}: unknown key {key!r} in {where}.{hint}")


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
        names the file and the key.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"pretraining config {p} does not exist.")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"pretraining config {p} is not valid TOML ({exc}).") from exc
    return parse_config(raw, p)


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
        If a key is unknown or invalid.
    """
    from training.pretrain.registry import objective_class

    p = Path(path)
    _check_keys(raw, _TOP, "the top level", p)
    if "objective" not in raw:
        raise ValueError(f"pretraining config {p} lacks 'objective'.")
    objective_class(str(raw["objective"]))  # did-you-mean error for unknown names
    for table in ("encoder", "data"):
        if not isinstance(raw.get(table), dict):
            raise ValueError(f"pretraining config {p} lacks the [{table}] table.")
    data = dict(raw["data"])
    _check_keys(data, _DATA, "[data]", p)
    data.setdefault("sequences", ["T1", "T1C", "T2", "FLAIR"])
    data.setdefault("voxel_mm", 2.0)
    data.setdefault("patch", [64, 64, 64])
    data.setdefault("batch_size", 2)
    data.setdefault("workers", 0)
    data.setdefault("sources", [])
    optim = {"lr": 1e-3, "weight_decay": 0.05, "warmup_steps": 10, "max_steps": 100, "grad_clip": 1.0}
    _check_keys(raw.get("optim", {}), _OPTIM, "[optim]", p)
    optim.update(raw.get("optim", {}))
    run = {"out_dir": f"var/pretrain/{p.stem}", "threads": 2, "log_every": 10, "checkpoint_every": 200}
    _check_keys(raw.get("run", {}), _RUN, "[run]", p)
    run.update(raw.get("run", {}))
    encoder = dict(raw["encoder"])
    encoder.setdefault("in_channels", len(data["sequences"]))
    if int(encoder["in_channels"]) != len(data["sequences"]):
        raise ValueError(
            f"pretraining config {p}: encoder in_channels {encoder['in_channels']} differs from the "
            f"{len(data['sequences'])} sequences of [data]."
        )
    stages = []
    for i, st in enumerate(raw.get("stages", [])):
        _check_keys(st, {"name", "steps", "data"}, f"[[stages]] #{i + 1}", p)
        if "steps" not in st:
            raise ValueError(f"pretraining config {p}: stage #{i + 1} lacks 'steps'.")
        over = dict(st.get("data", {}))
        _check_keys(over, _DATA, f"[[stages]] #{i + 1} data", p)
        stages.append(Stage(str(st.get("name", f"stage{i + 1}")), int(st["steps"]), {**data, **over}))
    if not stages:
        stages = [Stage("main", int(optim["max_steps"]), data)]
    return PretrainConfig(
        path=p,
        objective=str(raw["objective"]),
        seed=int(raw.get("seed", 0)),
        encoder=encoder,
        options=dict(raw.get("options", {})),
        optim=optim,
        run=run,
        stages=stages,
        raw=raw,
    )
