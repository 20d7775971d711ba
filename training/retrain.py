"""Scheduled retraining: fine-tune on a schedule, register every result, promote only a better one.

A retraining config is a small TOML file (paths relative to the file)::

    finetune_config = "../training/configs/finetune-demo.toml"  # what to train
    registry_dir = "../var/registry"                             # where bundles are kept
    schedule = "0 2 * * 0"        # cron: minute hour day-of-month month day-of-week
    timezone = "UTC"
    metric = "all/dice_WT"         # a validation metric of the fine-tuning run
    higher_is_better = true
    min_improvement = 0.0          # promote when candidate >= promoted + min_improvement
    max_steps = 0                  # 0: the fine-tuning config's own max_steps

``mrinode retrain schedule --config FILE`` runs :func:`run_once` at every cron fire time
(APScheduler); ``--now`` runs once immediately and exits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from dicom_node.typed_config import StrictModel, error_sentences, load_toml
from training.registry import ModelRegistry, RegistryEntry

__all__ = ["RetrainConfig", "RetrainOutcome", "load_retrain_config", "run_once", "schedule"]

log = logging.getLogger(__name__)


class RetrainConfig(StrictModel):
    """Typed retraining settings (see the module docstring); unknown keys are refused."""

    finetune_config: Path
    registry_dir: Path = Path("var/registry")
    schedule: str = "0 2 * * 0"
    timezone: str = "UTC"
    metric: str = "all/dice_WT"
    higher_is_better: bool = True
    min_improvement: float = Field(default=0.0, ge=0.0)
    max_steps: int = Field(default=0, ge=0)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a 5-field cron expression ({exc})") from exc
        return value


def load_retrain_config(path: str | Path) -> RetrainConfig:
    """Read a retraining TOML file; relative paths are taken from the file's folder.

    Raises
    ------
    ValueError
        With a sentence naming the key, for a missing file, bad TOML or a bad value.
    """
    path = Path(path)
    raw: dict[str, Any] = load_toml(path, "retraining config")
    try:
        cfg = RetrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"retraining config {path}: " + " ".join(error_sentences(exc, RetrainConfig))) from None
    base = path.parent
    for key in ("finetune_config", "registry_dir"):
        value: Path = getattr(cfg, key)
        if not value.is_absolute():
            setattr(cfg, key, (base / value).resolve())
    return cfg


@dataclass
class RetrainOutcome:
    """What one retraining run did."""

    entry: RegistryEntry
    candidate: float | None
    previous: float | None
    promoted: bool
    reason: str


def _decide(cfg: RetrainConfig, candidate: float | None, previous: float | None) -> tuple[bool, str]:
    if candidate is None:
        return False, f"the run reported no {cfg.metric!r}; kept the promoted version"
    if previous is None:
        return True, f"first version with {cfg.metric}={candidate:.4f}"
    gain = candidate - previous if cfg.higher_is_better else previous - candidate
    if gain >= cfg.min_improvement:
        return True, f"{cfg.metric} {previous:.4f} -> {candidate:.4f} (gain {gain:+.4f} >= {cfg.min_improvement})"
    return False, f"{cfg.metric} {previous:.4f} -> {candidate:.4f} (gain {gain:+.4f} < {cfg.min_improvement})"


def run_once(cfg: RetrainConfig) -> RetrainOutcome:
    """Fine-tune once, register the bundle and promote it when it is at least as good.

    Parameters
    ----------
    cfg : RetrainConfig
        The retraining settings.

    Returns
    -------
    RetrainOutcome
        The registry entry and the promotion decision with its reason.
    """
    from training.finetune import train
    from training.ft_config import load_finetune_config

    ft = load_finetune_config(cfg.finetune_config)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ft.out_dir = str(cfg.registry_dir / "runs" / f"{ft.name}-{stamp}")
    ft.bundle_out = str(cfg.registry_dir / "staging" / f"{ft.name}-{stamp}")
    result = train(ft, max_steps=cfg.max_steps or None)
    if result.get("bundle") is None:
        raise RuntimeError(f"fine-tuning {cfg.finetune_config} exported no bundle; nothing to register.")
    registry = ModelRegistry(cfg.registry_dir)
    metrics: dict[str, float] = dict(result.get("metrics") or {})
    candidate = metrics.get(cfg.metric)
    current = registry.promoted(ft.name)
    previous = None if current is None else current.metrics.get(cfg.metric)
    promote, reason = _decide(cfg, candidate, previous)
    entry = registry.register(Path(result["bundle"]), note=reason, metrics=metrics)
    if promote:
        registry.promote(entry.name, entry.version)
    log.info("retrain %s: %s version %s (%s)", ft.name, "promoted" if promote else "kept", entry.version, reason)
    return RetrainOutcome(entry=entry, candidate=candidate, previous=previous, promoted=promote, reason=reason)


def schedule(cfg: RetrainConfig) -> None:
    """Run :func:`run_once` at every fire time of ``cfg.schedule`` until interrupted.

    A failed run is logged and counted out; the next fire time runs again.
    """
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.cron import CronTrigger

    def job() -> None:
        try:
            run_once(cfg)
        except (RuntimeError, ValueError, OSError) as exc:
            log.error("scheduled retraining failed: %s", exc)

    scheduler = BlockingScheduler(timezone=cfg.timezone)
    trigger = CronTrigger.from_crontab(cfg.schedule, timezone=cfg.timezone)
    scheduler.add_job(job, trigger, id="retrain", max_instances=1, coalesce=True)
    log.info("retraining scheduled: %s (%s); next at %s", cfg.schedule, cfg.timezone,
             trigger.get_next_fire_time(None, datetime.now(UTC)))
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        log.info("retraining scheduler stopped")
