"""The label-efficiency evidence through ``mrinode train evaluate``: dispatch, learning-rate groups, a tiny run.

The tiny run is a few steps of everything on a handful of synthetic subjects: it checks the
plumbing (pretraining, both arms, report, caches), not the evidence's figures.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import pytest
import torch

from tests.training.pretrain_support import CONFIGS, write_toml


def _ns(config: Path) -> argparse.Namespace:
    return argparse.Namespace(train_command="evaluate", config=str(config))


def test_evaluate_dispatches_on_the_label_efficiency_table(tmp_path: Path) -> None:
    from training.cli.train import _target

    assert _target(_ns(CONFIGS / "label-efficiency.toml")) == "training.pretrain.label_efficiency"
    assert _target(_ns(CONFIGS / "label-efficiency-tiny.toml")) == "training.pretrain.label_efficiency"
    # bundle evaluation keeps its module, also for a missing or broken file (it reports those itself)
    assert _target(_ns(CONFIGS / "evaluate-brain-tumour-demo.toml")) == "training.evaluate"
    assert _target(_ns(tmp_path / "missing.toml")) == "training.evaluate"
    (tmp_path / "bad.toml").write_text("[label_efficiency\n")
    assert _target(_ns(tmp_path / "bad.toml")) == "training.evaluate"
    assert _target(argparse.Namespace(train_command="pretrain", config="x")) == "training.pretrain.run"


def test_pretrained_encoder_trains_at_the_scaled_rate_and_lora_at_full_rate() -> None:
    from models.segmenter import build_segmenter
    from training.pretrain.downstream import _param_groups
    from training.pretrain.slices import build_slice_segmenter

    torch.manual_seed(0)
    enc = {"name": "swin3d", "in_channels": 2, "feature_size": 12, "depths": [1, 1, 1, 1],
           "num_heads": [1, 2, 2, 4], "window_size": 4}
    net = build_segmenter({"encoder": enc, "num_classes": 4, "norm": "batch"})
    groups = _param_groups(net, 1e-3, 0.1)
    n_enc = sum(p.numel() for p in net.encoder.parameters())
    assert [g["lr"] for g in groups] == [pytest.approx(1e-3), pytest.approx(1e-4)]
    assert sum(p.numel() for p in groups[1]["params"]) == n_enc
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in net.parameters())

    vit = {"name": "vit2d", "in_channels": 2, "img_size": [32, 32], "patch_size": 8, "hidden_size": 48,
           "mlp_dim": 96, "num_layers": 2, "num_heads": 2}
    lora = build_slice_segmenter({"encoder": vit, "num_classes": 4, "slice": {"mode": "lora", "width": 16}})
    groups = _param_groups(lora, 1e-3, 0.1)
    assert len(groups) == 1, "with LoRA the frozen encoder has no trainable weight but its new adapters"
    adapters = [p for n, p in lora.named_parameters() if "lora_" in n]
    assert adapters and {id(p) for p in adapters} <= {id(p) for p in groups[0]["params"]}
    out = lora(torch.zeros(3, 2, 32, 32, 1))
    assert out.shape == (3, 4, 32, 32, 1)
    with pytest.raises(ValueError, match="2D encoder"):
        build_slice_segmenter({"encoder": enc, "num_classes": 4})


def test_tiny_label_efficiency_run_through_the_cli(tmp_path: Path) -> None:
    from dicom_node.cli import main

    raw = tomllib.loads((CONFIGS / "label-efficiency-tiny.toml").read_text())
    raw["data"]["work_dir"] = str(tmp_path / "work")
    raw["report"] = {"dir": str(tmp_path / "report")}
    raw["pretrain"]["objectives"] = ["prism", "dino2d"]
    raw["pretrain"]["steps"] = 3
    raw["finetune"]["fractions"] = [0.5, 1.0]
    raw["finetune"]["steps"] = 2
    config = write_toml(raw, tmp_path / "le.toml")
    assert main(["train", "evaluate", "--config", str(config)]) == 0

    rows = json.loads((tmp_path / "work" / "results.json").read_text())
    assert sorted((r["init"], r["fraction"]) for r in rows) == sorted(
        (i, f) for i in ("scratch", "scratch2d", "prism", "dino2d") for f in (0.5, 1.0)
    )
    assert {r["labelled"] for r in rows} == {2, 3} and all(r["split"] == "test" for r in rows)
    text = (tmp_path / "report" / "label-efficiency.md").read_text()
    assert "mrinode train evaluate --config" in text
    for init in ("scratch", "scratch2d", "prism", "dino2d"):
        assert f"| {init} | 100% | 3 |" in text
    assert "| dino2d | scratch2d |" in text and "| prism | scratch |" in text
    assert (tmp_path / "report" / "label-efficiency.png").stat().st_size > 1000
    assert json.loads((tmp_path / "report" / "label-efficiency-results.json").read_text()) == rows
    for objective in ("prism", "dino2d"):
        assert (tmp_path / "work" / "encoders" / objective / "encoder" / "encoder.json").is_file()

    # a second run finds everything cached; --report-only redraws from the results
    assert main(["train", "evaluate", "--config", str(config), "--report-only"]) == 0
    assert json.loads((tmp_path / "work" / "results.json").read_text()) == rows

    # more repeats keep the rows made so far and add the new repeat's
    raw["finetune"]["repeats"] = 2
    write_toml(raw, config)
    assert main(["train", "evaluate", "--config", str(config)]) == 0
    more = json.loads((tmp_path / "work" / "results.json").read_text())
    assert more[: len(rows)] == rows and len(more) == 2 * len(rows)
    assert all(r["repeat"] == 1 for r in more[len(rows):])
    assert "| 2 |" in (tmp_path / "report" / "label-efficiency.md").read_text()

    # other pretraining settings with the same encoder folder: a sentence, not a silent reuse
    raw["pretrain"]["steps"] = 4
    write_toml(raw, config)
    assert main(["train", "evaluate", "--config", str(config)]) == 2


def test_label_efficiency_bad_config_is_a_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.pretrain.label_efficiency import main

    bad = tmp_path / "le.toml"
    bad.write_text('[label_efficiency]\nsplit = "train"\n[data]\nwork_dir = "x"\n[finetune]\n[pretrain]\nobjectives = []\n')
    assert main(["--config", str(bad)]) == 2
    assert "split must be 'test' or 'validation'" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
