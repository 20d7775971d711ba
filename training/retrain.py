"""Retraining on a schedule: harvest corrections, fine-tune production, gate, promote, record.

A retraining config is a small TOML file (paths relative to the file)::

    finetune_config = "finetune-tiny.toml"   # network, preprocessing and the previous data
    registry_dir = "../../var/registry"      # every trained bundle is kept here by version
    model = ""                # registry name (default: the fine-tuning config's name)
    base_bundle = ""          # first production version when the registry has none
    schedule = "0 2 * * 0"    # cron: minute hour day-of-month month day-of-week
    timezone = "UTC"
    misfire_grace_s = 3600    # a fire time missed (node down) still runs this long after
    metric = "all/dice_WT"    # the target metric (<subset>/<metric> of the validation)
    higher_is_better = true
    min_improvement = 0.0     # promote when target(new) >= target(old) + min_improvement ...
    regions = ["dice_WT", "dice_TC", "dice_ET"]
    region_tolerance = 0.0    # ... and every region(new) >= region(old) - region_tolerance
    max_steps = 0             # 0: the fine-tuning config's own max_steps
    retrain_without_new_data = false   # false: skip a run when the training set has not changed
    device = "cpu"

    [harvest]      url, user, password, node_manufacturers, out_dir, unlabelled, unlabelled_out_dir
                   (training.harvest.HarvestConfig)
    [validation]   synth = {subjects = 2, seed = 97000, ...}, dirs = [...], manifest = "" (locked real
                   cases), subsets = {all = [...]}: the fixed held-out set both bundles are scored on

One run (:func:`run_once`): harvest the PACS into a new training-set version → fine-tune the
promoted bundle (warm start) on the fine-tuning config's data plus every harvested case →
evaluate the promoted and the new bundle on the validation set with the node's inference
engine → register the new bundle and promote it only when it passes the gate → record the
run (data counts, both bundles' metrics, decision and why, duration) in
``<registry>/retrain-history.sqlite`` and ``<registry>/retrain-last.json`` (the node's
``/metrics`` reads the latter). Runs are serialised by a lock file, so a scheduled run and
``run-once`` never overlap.

``mrinode retrain schedule --config FILE`` keeps its schedule in an APScheduler SQLite job
store (``<registry>/retrain-jobs.sqlite``): a restart keeps the next fire time, a fire time
missed by less than ``misfire_grace_s`` still runs, missed runs coalesce into one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from dicom_node.typed_config import StrictModel, error_sentences, load_toml
from models.versions import LAST_RUN
from training.harvest.run import HarvestConfig
from training.registry import ModelRegistry, RegistryEntry

__all__ = [
    "RetrainConfig",
    "RetrainOutcome",
    "ValidationTable",
    "history",
    "load_retrain_config",
    "open_scheduler",
    "run_once",
    "schedule",
]

log = logging.getLogger(__name__)

HISTORY_DB = "retrain-history.sqlite"
JOBS_DB = "retrain-jobs.sqlite"
LOCK = "retrain.lock"


class ValidationTable(StrictModel):
    """``[validation]``: the fixed held-out set both bundles are scored on."""

    manifest: str = ""
    dirs: list[str] = Field(default_factory=list)
    synth: dict[str, Any] = Field(default_factory=dict)
    subsets: dict[str, list[str]] = Field(default_factory=dict)
    out_dir: str = ""


class RetrainConfig(StrictModel):
    """Typed retraining settings (see the module docstring); unknown keys are refused."""

    finetune_config: Path
    registry_dir: Path = Path("var/registry")
    model: str = ""
    base_bundle: Path | None = None
    schedule: str = "0 2 * * 0"
    timezone: str = "UTC"
    misfire_grace_s: int = Field(default=3600, ge=1)
    metric: str = "all/dice_WT"
    higher_is_better: bool = True
    min_improvement: float = Field(default=0.0, ge=0.0)
    regions: list[str] = Field(default_factory=lambda: ["dice_WT", "dice_TC", "dice_ET"])
    region_tolerance: float = Field(default=0.0, ge=0.0)
    max_steps: int = Field(default=0, ge=0)
    retrain_without_new_data: bool = False
    device: str = "cpu"
    harvest: HarvestConfig | None = None
    validation: ValidationTable | None = None

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
    for key in ("finetune_config", "registry_dir", "base_bundle"):
        value: Path | None = getattr(cfg, key)
        if value is not None and not value.is_absolute():
            setattr(cfg, key, (base / value).resolve())
    if cfg.harvest is not None:
        h = cfg.harvest
        h.out_dir = h.out_dir if h.out_dir.is_absolute() else (base / h.out_dir).resolve()
        if h.unlabelled_out_dir is not None and not h.unlabelled_out_dir.is_absolute():
            h.unlabelled_out_dir = (base / h.unlabelled_out_dir).resolve()
    if cfg.validation is not None:
        v = cfg.validation
        if v.manifest and not Path(v.manifest).is_absolute():
            v.manifest = str((base / v.manifest).resolve())
        v.dirs = [d if Path(d).is_absolute() else str((base / d).resolve()) for d in v.dirs]
        if v.out_dir and not Path(v.out_dir).is_absolute():
            v.out_dir = str((base / v.out_dir).resolve())
    return cfg


@dataclass
class RetrainOutcome:
    """What one retraining run did (the record written to the history)."""

    started_at: str
    seconds: float = 0.0
    decision: str = "failed"  # promoted | refused | skipped | failed
    reason: str = ""
    model: str = ""
    previous_version: str | None = None
    candidate_version: str | None = None
    previous_metrics: dict[str, float] = field(default_factory=dict)
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    metric: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    entry: RegistryEntry | None = None

    @property
    def promoted(self) -> bool:
        """Whether the candidate was promoted."""
        return self.decision == "promoted"

    @property
    def candidate(self) -> float | None:
        """The candidate's target metric."""
        return self.candidate_metrics.get(self.metric)

    @property
    def previous(self) -> float | None:
        """The promoted bundle's target metric."""
        return self.previous_metrics.get(self.metric)

    def record(self) -> dict[str, Any]:
        """The JSON form kept in the history."""
        out = asdict(self)
        out.pop("entry")
        return out


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def decide(cfg: RetrainConfig, new: dict[str, float], old: dict[str, float] | None) -> tuple[bool, str]:
    """The promotion gate: at least as good on every region, better on the target by the margin.

    Parameters
    ----------
    cfg : RetrainConfig
        Regions, tolerance, target metric and margin.
    new, old : dict
        Validation metrics of the candidate and of the promoted bundle (None: none promoted).

    Returns
    -------
    (bool, str)
        Whether to promote, and why (one sentence).
    """
    target = new.get(cfg.metric)
    if not _finite(target):
        return False, f"the candidate has no finite {cfg.metric} on the validation set"
    assert target is not None
    if old is None:
        return True, f"first version ({cfg.metric}={target:.4f})"
    subset = cfg.metric.split("/", 1)[0] if "/" in cfg.metric else ""
    sign = 1.0 if cfg.higher_is_better else -1.0
    worse = []
    for region in cfg.regions:
        key = f"{subset}/{region}" if subset else region
        a, b = old.get(key), new.get(key)
        if not _finite(a) and not _finite(b):
            continue
        if not _finite(b) or (_finite(a) and sign * (b - a) < -cfg.region_tolerance):  # type: ignore[operator]
            worse.append(f"{key} {a:.4f} -> {b:.4f}" if _finite(a) and _finite(b) else f"{key} {a} -> {b}")
    before = old.get(cfg.metric)
    if not _finite(before):
        before = -math.inf if cfg.higher_is_better else math.inf
    assert before is not None
    gain = sign * (target - before)
    if worse:
        return False, f"worse on {', '.join(worse)} (tolerance {cfg.region_tolerance})"
    if gain < cfg.min_improvement or (cfg.min_improvement == 0.0 and gain < 0):
        return False, f"{cfg.metric} {before:.4f} -> {target:.4f} (gain {gain:+.4f} < margin {cfg.min_improvement})"
    return True, (f"{cfg.metric} {before:.4f} -> {target:.4f} (gain {gain:+.4f} >= margin {cfg.min_improvement}); "
                  f"no region worse by more than {cfg.region_tolerance}")


@contextlib.contextmanager
def _run_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another retraining run holds {root / LOCK}; one run at a time.") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _db(root: Path) -> sqlite3.Connection:
    db = sqlite3.connect(root / HISTORY_DB)
    db.execute("CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT, "
               "model TEXT, decision TEXT, seconds REAL, record TEXT)")
    return db


def _record(cfg: RetrainConfig, outcome: RetrainOutcome) -> None:
    rec = outcome.record()
    with contextlib.closing(_db(cfg.registry_dir)) as db, db:
        db.execute("INSERT INTO runs (started_at, model, decision, seconds, record) VALUES (?, ?, ?, ?, ?)",
                   (outcome.started_at, outcome.model, outcome.decision, outcome.seconds, json.dumps(rec)))
    last = {"finished_at": time.time(), "decision": outcome.decision, "model": outcome.model,
            "metric": outcome.metric, "candidate": outcome.candidate, "previous": outcome.previous,
            "seconds": outcome.seconds, "version": outcome.candidate_version}
    tmp = cfg.registry_dir / f".{LAST_RUN}.tmp"
    tmp.write_text(json.dumps(last) + "\n")
    tmp.replace(cfg.registry_dir / LAST_RUN)


def history(cfg: RetrainConfig, limit: int = 50) -> list[dict[str, Any]]:
    """The last ``limit`` runs, newest first (their records)."""
    if not (cfg.registry_dir / HISTORY_DB).is_file():
        return []
    with contextlib.closing(_db(cfg.registry_dir)) as db:
        rows = db.execute("SELECT id, record FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [{"id": i, **json.loads(r)} for i, r in rows]


def _last_trained_dataset(cfg: RetrainConfig, model: str) -> int | None:
    for rec in history(cfg, limit=200):
        if rec.get("model") == model and rec.get("decision") in ("promoted", "refused"):
            v = rec.get("data", {}).get("dataset_version")
            return int(v) if v is not None else None
    return None


def _validation_manifest(cfg: RetrainConfig, ft: Any) -> Any:
    from training.manifest import Manifest, ManifestError, build_manifest, load_manifest, write_synth_subjects

    v = cfg.validation
    if v is None:
        raise ValueError("the retraining config has no [validation] table; the gate needs a fixed held-out set.")
    subjects = []
    if v.manifest:
        subjects += load_manifest(v.manifest).subjects
    dirs: list[str | Path] = list(v.dirs)
    if v.synth:
        out = Path(v.out_dir) if v.out_dir else cfg.registry_dir / "validation"
        dirs.append(write_synth_subjects(dict(v.synth), out / "synth"))
    for d in dirs:
        subjects += build_manifest(d).subjects
    if not subjects:
        raise ManifestError("the [validation] table names no subjects (manifest, dirs or synth).")
    return Manifest(subjects, "validation", "retrain-validation")


def _score(bundle: Path, manifest: Any, subsets: dict[str, list[str]], device: str) -> dict[str, float]:
    from training.evaluate import evaluate

    result = evaluate(str(bundle), manifest, subsets, device=device, with_hd95=False)
    return {f"{s}/{k}": float(v) for s, stats in result["summary"].items() for k, v in stats.items()
            if k.startswith("dice_") and not k.endswith("_std")}


def run_once(cfg: RetrainConfig) -> RetrainOutcome:
    """Harvest, fine-tune the promoted bundle, gate, promote or refuse, and record the run.

    Parameters
    ----------
    cfg : RetrainConfig
        The retraining settings.

    Returns
    -------
    RetrainOutcome
        The record of the run (also in the history); a failed run is recorded and re-raised.

    Raises
    ------
    RuntimeError
        Another run holds the lock, or fine-tuning exported no bundle.
    """
    with _run_lock(cfg.registry_dir):
        t0 = time.perf_counter()
        outcome = RetrainOutcome(started_at=datetime.now(UTC).isoformat(timespec="seconds"), metric=cfg.metric)
        try:
            _run(cfg, outcome)
        except Exception as exc:
            outcome.decision, outcome.reason = "failed", f"{type(exc).__name__}: {exc}"
            outcome.seconds = time.perf_counter() - t0
            _record(cfg, outcome)
            raise
        outcome.seconds = time.perf_counter() - t0
        _record(cfg, outcome)
        log.info("retrain %s: %s (%s) in %.1f s", outcome.model, outcome.decision, outcome.reason, outcome.seconds)
        return outcome


def _run(cfg: RetrainConfig, outcome: RetrainOutcome) -> None:
    from models.bundle import load_bundle
    from training.finetune import gather_manifest, train
    from training.ft_config import load_finetune_config
    from training.manifest import Manifest, load_manifest

    ft = load_finetune_config(cfg.finetune_config)
    name = cfg.model or ft.name
    ft.name = name
    outcome.model = name
    registry = ModelRegistry(cfg.registry_dir)
    current = registry.promoted(name)
    if current is None and cfg.base_bundle is not None:
        entry = registry.register(cfg.base_bundle, note="base bundle (first production version)")
        current = registry.promote(name, entry.version, why="base bundle")
    production = registry.current_bundle(name)
    outcome.previous_version = current.version if current else None
    # 1. harvest
    data: dict[str, Any] = {}
    stages: dict[str, float] = {}
    data["stage_seconds"] = stages
    t = time.perf_counter()
    harvested = Manifest([], "harvested", "")
    if cfg.harvest is not None:
        from training.harvest import TrainingSet, harvest

        card = load_bundle(production).card if production else None
        if card is None:
            raise ValueError("harvesting needs a production bundle (its labels map segments); set base_bundle.")
        report = harvest(cfg.harvest, card, ft.channels)
        data["harvest"] = {k: v for k, v in report.to_dict().items() if k not in ("manifest",)}
        tset = TrainingSet(cfg.harvest.out_dir)
        data["dataset_version"] = tset.current_version()
        path = tset.manifest_path()
        if path is not None:
            harvested = load_manifest(path)
        data["harvested_cases"] = len(harvested.subjects)
        data["new_cases"] = len(report.added) + len(report.replaced)
        stages["harvest"] = time.perf_counter() - t
        if not cfg.retrain_without_new_data and (
                not harvested.subjects or _last_trained_dataset(cfg, name) == data["dataset_version"]):
            outcome.data = data
            outcome.decision = "skipped"
            outcome.reason = ("no harvested cases yet" if not harvested.subjects else
                              f"training set version {data['dataset_version']} was trained on already")
            return
    # 2. fine-tune the production bundle on the previous data plus every harvested case
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    run_dir = cfg.registry_dir / "runs" / f"{name}-{stamp}"
    ft.out_dir = str(run_dir)
    previous = gather_manifest(ft)
    combined = Manifest(previous.subjects + harvested.subjects, f"{name}-retrain", "previous+harvested")
    ft.manifest = str(combined.save(run_dir / "train-manifest.json"))
    ft.val_subjects = 0
    ft.bundle_out = str(cfg.registry_dir / "staging" / f"{name}-{stamp}")
    if production is not None:
        ft.init_weights = str(production)
    data.update(previous_subjects=len(previous.subjects), train_subjects=len(combined.subjects))
    t = time.perf_counter()
    result = train(ft, max_steps=cfg.max_steps or None)
    stages["finetune"] = time.perf_counter() - t
    if result.get("bundle") is None:
        raise RuntimeError(f"fine-tuning {cfg.finetune_config} exported no bundle; nothing to register.")
    data["steps"] = int(result.get("steps", 0))
    # 3. evaluate both on the fixed validation set, gate
    val = _validation_manifest(cfg, ft)
    subsets = (cfg.validation.subsets if cfg.validation and cfg.validation.subsets else {"all": list(ft.channels)})
    data["validation_subjects"] = len(val.subjects)
    outcome.data = data
    t = time.perf_counter()
    outcome.candidate_metrics = _score(Path(result["bundle"]), val, subsets, cfg.device)
    if production is not None:
        outcome.previous_metrics = _score(production, val, subsets, cfg.device)
    stages["evaluate_both"] = time.perf_counter() - t
    promote, reason = decide(cfg, outcome.candidate_metrics, outcome.previous_metrics if production else None)
    entry = registry.register(Path(result["bundle"]), note=reason, metrics=outcome.candidate_metrics)
    outcome.entry = entry
    outcome.candidate_version = entry.version
    outcome.reason = reason
    if promote:
        registry.promote(entry.name, entry.version, why=reason)
        outcome.decision = "promoted"
    else:
        outcome.decision = "refused"


def scheduled_run(config_path: str) -> None:
    """The scheduler's job: read the config again (it may have changed) and run once; never raises."""
    try:
        run_once(load_retrain_config(config_path))
    except Exception as exc:  # a scheduled run must never stop the scheduler; it is recorded
        log.error("scheduled retraining failed: %s", exc)


def open_scheduler(cfg: RetrainConfig, config_path: str | Path) -> Any:
    """A started (paused) background scheduler with the retraining job in its SQLite job store.

    The job is kept when it is already stored with the same cron expression and time zone
    (its next fire time survives a restart); otherwise it is (re)placed.
    """
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    cfg.registry_dir.mkdir(parents=True, exist_ok=True)
    store = SQLAlchemyJobStore(url=f"sqlite:///{cfg.registry_dir / JOBS_DB}")
    scheduler = BackgroundScheduler(jobstores={"default": store}, timezone=cfg.timezone,
                                    job_defaults={"coalesce": True, "max_instances": 1,
                                                  "misfire_grace_time": cfg.misfire_grace_s})
    scheduler.start(paused=True)
    trigger = CronTrigger.from_crontab(cfg.schedule, timezone=cfg.timezone)
    job = scheduler.get_job("retrain")
    wanted = [str(Path(config_path).resolve())]
    if job is None or str(job.trigger) != str(trigger) or list(job.args) != wanted:
        scheduler.add_job(scheduled_run, trigger, args=wanted, id="retrain", replace_existing=True,
                          coalesce=True, max_instances=1, misfire_grace_time=cfg.misfire_grace_s)
    return scheduler


def schedule(cfg: RetrainConfig, config_path: str | Path, stop_after_s: float | None = None) -> None:
    """Run the retraining job at every fire time of ``cfg.schedule`` until interrupted."""
    scheduler = open_scheduler(cfg, config_path)
    job = scheduler.get_job("retrain")
    log.info("retraining scheduled: %s (%s); next at %s; job store %s", cfg.schedule, cfg.timezone,
             job.next_run_time if job else None, cfg.registry_dir / JOBS_DB)
    scheduler.resume()
    deadline = None if stop_after_s is None else time.monotonic() + stop_after_s
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1.0)
    except (KeyboardInterrupt, SystemExit):
        log.info("retraining scheduler stopped")
    finally:
        scheduler.shutdown(wait=True)
