"""The cross-protocol label-efficiency evidence through ``mrinode train evaluate``, on the ``-tiny`` config.

The tiny run (the shipped ``label-efficiency-tiny.toml``: two protocol families, 6 mm
subjects, a few steps of everything) checks the plumbing and the split, not the figures:
no test subject reaches pretraining or fine-tuning, every cell has its rows, the report and
plots are written, repeats are reproducible from their seeds, and caches are kept.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The shipped tiny config run once through the CLI, in a temporary work folder."""
    from dicom_node.cli import main

    tmp = tmp_path_factory.mktemp("le-tiny")
    raw = tomllib.loads((CONFIGS / "label-efficiency-tiny.toml").read_text())
    raw["data"]["work_dir"] = str(tmp / "work")
    raw["report"]["dir"] = str(tmp / "report")
    config = write_toml(raw, tmp / "le.toml")
    assert main(["train", "evaluate", "--config", str(config)]) == 0
    return {"raw": raw, "config": config, "work": tmp / "work", "report": tmp / "report",
            "rows": json.loads((tmp / "work" / "results.json").read_text())}


def _ids(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir()}


def test_tiny_run_writes_every_cell_and_the_report(tiny: dict[str, Any]) -> None:
    rows, raw = tiny["rows"], tiny["raw"]
    cells = sorted((r["arm"], r["labelled"], r["test"], r["repeat"]) for r in rows)
    assert cells == sorted((a, k, t, rep) for a in ("scratch", "prism") for k in (2, 1)
                           for t in ("same-protocol", "other-protocol") for rep in (0, 1))
    for r in rows:
        assert {"arm", "labelled", "test", "repeat", "dice_wt", "dice_tc", "dice_et"} <= set(r)
        assert all(0.0 <= r[f"dice_{x}"] <= 1.0 for x in ("wt", "tc", "et"))
        assert len(r["train_ids"]) == r["labelled"] and r["labelled_family"] == "siemens-3T-mprage"
    report = tiny["report"]
    text = (report / "label-efficiency.md").read_text()
    assert "mrinode train evaluate --config training/configs/label-efficiency-tiny.toml" in text
    assert "| prism − scratch | other-protocol |" in text
    assert "| scratch | 2 | other-protocol |" in text and "| prism | 1 | same-protocol |" in text
    for png in ("label-efficiency.png", "label-efficiency-paired.png", "probes.png"):
        assert (report / png).stat().st_size > 1000
    public = json.loads((report / "label-efficiency-results.json").read_text())
    assert public == [{k: v for k, v in r.items() if k != "settings"} for r in rows]
    probes = json.loads((tiny["work"] / "probe-results.json").read_text())
    assert {(p["arm"], p["mode"]) for p in probes} == {("scratch", "frozen-linear"), ("scratch", "scratch-trained"),
                                                        ("prism", "frozen-linear"), ("scratch", "frozen-linear-alone"),
                                                        ("prism", "frozen-linear-alone")}
    assert {p["probe"] for p in probes} == {"sequence", "tr", "te", "flip"}
    assert {p["test"] for p in probes} == {"same-protocol", "other-protocol"}
    # every probe series of a test subject: 8 sequences of 1 subject per family
    assert all(p["n_test"] == 8 for p in probes if p["probe"] == "sequence")
    assert raw["pretrain"]["objectives"] == ["prism"]


def test_no_test_subject_reaches_pretraining_or_fine_tuning(tiny: dict[str, Any]) -> None:
    work = tiny["work"] / "subjects"
    tests = _ids(work / "test-same") | _ids(work / "test-other") | _ids(work / "probe-test")
    labelled, unlabelled = _ids(work / "labelled"), _ids(work / "unlabelled")
    assert tests and labelled and unlabelled
    # what pretraining read: the sources recorded with the encoder
    settings = json.loads((tiny["work"] / "encoders" / "prism" / "settings.json").read_text())
    read = {Path(s).name for s in settings["data"]["sources"]}
    assert read == labelled | unlabelled and not read & tests
    # what fine-tuning read: every row's labelled subset
    for r in tiny["rows"]:
        assert set(r["train_ids"]) <= labelled and not set(r["train_ids"]) & tests
    # the families are the planned ones: labels and same-protocol tests from one, other-protocol from the other
    def family(role: str) -> set[str]:
        return {json.loads(p.read_text())["protocol_family"] for p in (work / role).glob("*/params.json")}

    assert family("labelled") == family("test-same") == {"siemens-3T-mprage"}
    assert family("test-other") == {"ge-1.5T-se"}
    assert family("unlabelled") == {"siemens-3T-mprage", "ge-1.5T-se"}
    kinds = {json.loads(p.read_text())["t1_kind"] for p in (work / "test-other").glob("*/params.json")}
    assert kinds == {"se"}


def test_a_repeat_is_reproducible_from_its_seed(tiny: dict[str, Any]) -> None:
    from training.pretrain.downstream import load_items
    from training.pretrain.label_efficiency import run_cell

    cfg = tomllib.loads(Path(tiny["config"]).read_text())
    seq = cfg["data"]["sequences"]
    sub = tiny["work"] / "subjects"
    train = load_items(json.loads((sub / "labelled" / "subjects.json").read_text())["paths"], seq)
    tests = {"other-protocol": load_items(json.loads((sub / "test-other" / "subjects.json").read_text())["paths"], seq)}
    enc = tiny["work"] / "encoders" / "prism" / "encoder"
    torch.set_num_threads(1)
    first = run_cell("prism", enc, cfg, train, tests, labelled=1, repeat=1)
    again = run_cell("prism", enc, cfg, train, tests, labelled=1, repeat=1)
    keep = ("train_ids", "seed", "dice_wt", "dice_tc", "dice_et", "final_loss")
    assert [{k: r[k] for k in keep} for r in first] == [{k: r[k] for k in keep} for r in again]
    recorded = next(r for r in tiny["rows"] if (r["arm"], r["labelled"], r["repeat"], r["test"]) == ("prism", 1, 1, "other-protocol"))
    assert {k: recorded[k] for k in keep} == {k: first[0][k] for k in keep}, "the run's row is the one its seed gives"


def test_caches_more_repeats_and_changed_settings(tiny: dict[str, Any]) -> None:
    from dicom_node.cli import main

    config, raw, rows = tiny["config"], json.loads(json.dumps(tiny["raw"])), tiny["rows"]
    # a second run finds everything cached; --report-only redraws from the rows
    assert main(["train", "evaluate", "--config", str(config), "--report-only"]) == 0
    assert json.loads((tiny["work"] / "results.json").read_text()) == rows
    # a second worker of a finished run finds everything made; a bad worker spec is a sentence
    from training.pretrain.label_efficiency import main as le_main

    assert le_main(["--config", str(config), "--worker", "1/2"]) == 0
    assert json.loads((tiny["work"] / "results.json").read_text()) == rows
    assert le_main(["--config", str(config), "--worker", "2/2"]) == 2
    # one more repeat keeps the rows made so far and adds the new repeat's (here for 1 labelled subject only)
    raw["finetune"]["repeats"] = 3
    raw["finetune"]["labelled"] = [1]
    write_toml(raw, config)
    assert main(["train", "evaluate", "--config", str(config)]) == 0
    more = json.loads((tiny["work"] / "results.json").read_text())
    assert more[: len(rows)] == rows and len(more) == len(rows) + 4
    assert {(r["repeat"], r["labelled"]) for r in more[len(rows):]} == {(2, 1)}
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
    bad.write_text('[label_efficiency]\n[data]\nwork_dir = "x"\n[finetune]\nfractions = [0.1]\n[pretrain]\nobjectives = []\n')
    assert main(["--config", str(bad)]) == 2
    assert "config key 'finetune.labelled'" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_one_more_objective_keeps_every_row_and_probe_made_so_far(tiny: dict[str, Any]) -> None:
    """(Last in the file: it adds an arm to the shared tiny run.) Rows are keyed per arm: adding
    ``swin_ssl`` runs its encoder, cells and probe only; a changed ``[probe]`` table re-probes."""
    from dicom_node.cli import main

    results, probes = tiny["work"] / "results.json", tiny["work"] / "probe-results.json"
    before, probes_before = json.loads(results.read_text()), json.loads(probes.read_text())
    raw = json.loads(json.dumps(tiny["raw"]))
    raw["pretrain"]["objectives"] = ["prism", "swin_ssl"]
    raw["pretrain"]["options"]["swin_ssl"] = {"mask_ratio": 0.5, "mask_patch": 8, "decoder_width": 16}
    config = write_toml(raw, tiny["config"])
    assert main(["train", "evaluate", "--config", str(config)]) == 0
    after = json.loads(results.read_text())
    assert after[: len(before)] == before, "the rows of scratch and prism were kept, not made again"
    added = after[len(before):]
    assert {r["arm"] for r in added} == {"swin_ssl"}
    assert sorted((r["labelled"], r["repeat"], r["test"]) for r in added) == sorted(
        (k, rep, t) for k in (2, 1) for rep in (0, 1) for t in ("same-protocol", "other-protocol"))
    probes_after = json.loads(probes.read_text())
    assert probes_after[: len(probes_before)] == probes_before
    assert {(p["arm"], p["mode"]) for p in probes_after[len(probes_before):]} == {("swin_ssl", "frozen-linear"),
                                                                                 ("swin_ssl", "frozen-linear-alone")}
    report = (tiny["report"] / "label-efficiency.md").read_text()
    assert "| swin_ssl − scratch | other-protocol |" in report and "| prism − scratch | other-protocol |" in report
    # another probe setting is another key: every arm is probed again, the segmentation rows stay
    raw["probe"]["steps"] = 4
    write_toml(raw, config)
    assert main(["train", "evaluate", "--config", str(config)]) == 0
    assert json.loads(results.read_text()) == after
    reprobed = json.loads(probes.read_text())[len(probes_after):]
    assert {(p["arm"], p["mode"]) for p in reprobed} == {(a, m) for a in ("scratch", "prism", "swin_ssl")
                                                         for m in ("frozen-linear", "frozen-linear-alone")} | {
                                                         ("scratch", "scratch-trained")}


def test_the_alone_placement_averages_the_series_given_in_each_channel_alone() -> None:
    """``frozen-linear-alone`` features: the series in one channel at a time (others zero), averaged."""
    from training.pretrain.probes import _ProbeNet

    class Recorder(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # one "stage": per-channel sums, kept spatially
            return [x * torch.arange(1, x.shape[1] + 1, dtype=x.dtype).view(1, -1, 1, 1, 1)]

    net = _ProbeNet(Recorder(), 3, 3)
    x = torch.rand(2, 1, 4, 4, 4)
    every = net.features(x)
    assert torch.allclose(every, x.flatten(1).mean(1, keepdim=True) * torch.tensor([1.0, 2.0, 3.0]))
    alone = net.features(x, "alone")
    # channel c alone: only map c is non-zero (weight c + 1); the mean over the 3 placements is a third of "every"
    assert torch.allclose(alone, every / 3)
