"""One configuration style: pretraining (with each objective's ``[options]``), fine-tuning and
retraining configs are typed models that refuse unknown keys with the key and a did-you-mean."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.training.pretrain_support import tiny_raw, write_toml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training" / "configs"


@pytest.mark.parametrize(("objective", "typo", "meant"), [
    ("swin_ssl", "mask_ratoi", "mask_ratio"),
    ("cross_sequence", "w_cros", "w_cross"),
    ("prism", "keep_prb", "keep_prob"),
    ("dino2d", "n_globl", "n_global"),
])
def test_a_typo_in_an_objective_option_is_refused_with_a_suggestion(
    tmp_path: Path, objective: str, typo: str, meant: str
) -> None:
    from training.pretrain.config import load_config

    raw = tiny_raw(objective, tmp_path, tmp_path / "out")
    raw["options"][typo] = 0.5
    path = write_toml(raw, tmp_path / "typo.toml")
    with pytest.raises(ValueError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(f"pretraining config {path} ({objective}): ")
    assert f"config key 'options.{typo}': unknown key (did you mean '{meant}'?)." in text


def test_objectives_refuse_unknown_options_themselves() -> None:
    """Options given in code (not through a config file) are checked too."""
    from models.encoders import build_encoder
    from training.pretrain.config import parse_config
    from training.pretrain.registry import build_objective

    raw = tiny_raw("swin_ssl", Path("."), Path("out"))
    cfg = parse_config(raw)
    encoder = build_encoder(cfg.encoder)
    with pytest.raises(ValueError, match=r"config key 'options\.temprature': unknown key \(did you mean 'temperature'\?\)"):
        build_objective("swin_ssl", encoder, {"temprature": 0.1}, int(cfg.encoder["in_channels"]))
    objective = build_objective("swin_ssl", encoder, {"mask_ratio": 0.25}, int(cfg.encoder["in_channels"]))
    assert objective.mask_ratio == 0.25 and objective.temperature == 0.2  # default from the model


def test_bad_option_values_name_the_key(tmp_path: Path) -> None:
    from training.pretrain.config import parse_config

    raw = tiny_raw("dino2d", tmp_path, tmp_path / "out")
    raw["options"]["n_global"] = 1
    with pytest.raises(ValueError, match=r"config key 'options\.n_global': Input should be greater than or equal to 2"):
        parse_config(raw)
    raw = tiny_raw("prism", tmp_path, tmp_path / "out")
    raw["options"]["mask_ratio"] = "half"
    with pytest.raises(ValueError, match=r"config key 'options\.mask_ratio': Input should be a valid number"):
        parse_config(raw)


def test_every_objective_has_an_options_model() -> None:
    from training.pretrain.options import OPTIONS
    from training.pretrain.registry import OBJECTIVES, objective_class

    assert set(OPTIONS) == set(OBJECTIVES)
    for name in OBJECTIVES:
        assert objective_class(name).options_model is OPTIONS[name]


@pytest.mark.parametrize(("table", "typo", "meant"), [
    ("data", "sequence", "sequences"),
    ("optim", "warmup_step", "warmup_steps"),
    ("run", "checkpoint_evry", "checkpoint_every"),
])
def test_pretraining_tables_suggest_the_nearest_key(tmp_path: Path, table: str, typo: str, meant: str) -> None:
    from training.pretrain.config import parse_config

    raw = tiny_raw("prism", tmp_path, tmp_path / "out")
    raw[table][typo] = 1
    with pytest.raises(ValueError, match=rf"config key '{table}\.{typo}': unknown key \(did you mean '{meant}'\?\)"):
        parse_config(raw)


def test_pretraining_stage_keys_are_checked(tmp_path: Path) -> None:
    from training.pretrain.config import parse_config

    raw = tiny_raw("swin_ssl", tmp_path, tmp_path / "out")
    raw["stages"] = [{"name": "a", "steps": 2, "data": {"source": ["x"]}}]
    with pytest.raises(ValueError, match=r"config key 'stages\[0\]\.data\.source': unknown key \(did you mean 'sources'\?\)"):
        parse_config(raw)
    raw["stages"] = [{"name": "a", "steps": 2, "data": {"sources": ["x"]}}, {"name": "b", "steps": 3}]
    cfg = parse_config(raw)
    assert [(s.name, s.steps, s.data.sources) for s in cfg.stages] == [("a", 2, ["x"]), ("b", 3, [str(tmp_path)])]


@pytest.mark.parametrize(("table", "typo", "meant"), [
    ("train", "max_step", "max_steps"),
    ("preprocessing", "spacing", "spacing_mm"),
    ("data", "val_subject", "val_subjects"),
    ("bundle", "verison", "version"),
    ("network", "num_class", "num_classes"),
])
def test_finetuning_tables_suggest_the_nearest_key(table: str, typo: str, meant: str) -> None:
    from training.ft_config import parse_finetune_config

    raw: dict[str, Any] = {"network": {"encoder": {"name": "swin3d"}}}
    raw.setdefault(table, {})[typo] = 1
    with pytest.raises(ValueError, match=rf"config key '{table}\.{typo}': unknown key \(did you mean '{meant}'\?\)"):
        parse_finetune_config(raw)


def test_finetuning_missing_encoder_and_bad_value() -> None:
    from training.ft_config import parse_finetune_config

    with pytest.raises(ValueError, match=r"config key 'network\.encoder': missing"):
        parse_finetune_config({})
    with pytest.raises(ValueError, match=r"config key 'train\.lr': Input should be greater than 0"):
        parse_finetune_config({"network": {"encoder": {"name": "swin3d"}}, "train": {"lr": 0}})


def test_retraining_config_suggests_the_nearest_key(tmp_path: Path) -> None:
    from training.retrain import load_retrain_config

    path = tmp_path / "retrain.toml"
    path.write_text('finetune_config = "ft.toml"\nmin_improvment = 0.1\n')
    with pytest.raises(ValueError, match=r"config key 'min_improvment': unknown key \(did you mean 'min_improvement'\?\)"):
        load_retrain_config(path)


def test_every_shipped_training_config_loads() -> None:
    from training.ft_config import load_finetune_config
    from training.pretrain.config import load_config
    from training.pretrain.options import objective_options
    from training.retrain import load_retrain_config

    seen = 0
    for path in sorted(CONFIGS.glob("*.toml")):
        raw = tomllib.loads(path.read_text())
        if "objective" in raw:
            load_config(path)
        elif "label_efficiency" in raw:
            for objective, options in raw.get("pretrain", {}).get("options", {}).items():
                objective_options(objective, options, str(path))
        elif "finetune_config" in raw:
            load_retrain_config(path)
        elif "network" in raw:
            load_finetune_config(path)
        else:
            continue
        seen += 1
    assert seen >= 14
