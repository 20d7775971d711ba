"""Scheduled retraining without a PACS: a real tiny fine-tuning run is scored on a fixed validation set,
registered, and promoted only when it passes the gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.registry import ModelRegistry
from training.retrain import RetrainConfig, ValidationTable, history, load_retrain_config, run_once

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def test_demo_config_loads_and_resolves_paths() -> None:
    cfg = load_retrain_config(CONFIGS / "retrain-demo.toml")
    assert cfg.finetune_config == (CONFIGS / "brain-tumour-demo.toml").resolve()
    assert cfg.finetune_config.is_file()


def test_bad_key_and_bad_cron_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "r.toml"
    bad.write_text('finetune_config = "x.toml"\nschedul = "0 2 * * 0"\n')
    with pytest.raises(ValueError, match="schedul"):
        load_retrain_config(bad)
    bad.write_text('finetune_config = "x.toml"\nschedule = "every sunday"\n')
    with pytest.raises(ValueError, match="schedule"):
        load_retrain_config(bad)


@pytest.mark.slow
def test_run_once_registers_then_promotes_only_improvements(tmp_path: Path) -> None:
    cfg = RetrainConfig(
        finetune_config=CONFIGS / "finetune-tiny.toml",
        registry_dir=tmp_path / "registry",
        metric="all/dice_WT",
        max_steps=2,
        validation=ValidationTable(synth={"subjects": 1, "seed": 97500, "voxel_mm": 4.0, "tumour": True},
                                   out_dir=str(tmp_path / "validation")),
    )
    first = run_once(cfg)
    assert first.promoted, first.reason
    assert first.candidate is not None
    registry = ModelRegistry(cfg.registry_dir)
    assert registry.promoted("finetune-tiny") == first.entry
    # An impossible bar: the second run (warm-started from the first) is registered but the first stays promoted.
    strict = cfg.model_copy(update={"min_improvement": 2.0, "region_tolerance": 1.0})
    second = run_once(strict)
    assert not second.promoted and second.decision == "refused" and "margin" in second.reason
    assert second.previous_metrics and second.candidate_metrics
    assert [r["decision"] for r in history(cfg)] == ["refused", "promoted"]
    assert [e.version for e in registry.versions("finetune-tiny")] == [first.entry.version, second.entry.version]
    assert registry.promoted("finetune-tiny") == first.entry
    assert (registry.current_bundle("finetune-tiny") / "card.json").is_file()  # type: ignore[operator]
