"""The tiny fine-tuning config: a few steps on synthetic subjects, loss going down, resume, a loadable bundle."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dicom_node.cli import main
from models.bundle import load_bundle
from training.finetune import export_checkpoint, train
from training.ft_config import parse_finetune_config

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "finetune-tiny.toml"


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    raw = tomllib.loads(CONFIG.read_text())
    out = tmp_path_factory.mktemp("ft")
    raw["train"]["out_dir"] = str(out / "run")
    raw["bundle"]["out"] = str(out / "bundle")
    return parse_finetune_config(raw)


def test_tiny_finetune_learns_resumes_and_exports_a_loadable_bundle(cfg) -> None:
    first = train(cfg, max_steps=3)
    assert first["steps"] == 3
    assert (Path(cfg.out_dir) / "checkpoint.pt").is_file()
    assert any((Path(cfg.out_dir) / "tb").iterdir()), "TensorBoard events were written"
    # a stopped run exports its last checkpoint without loading data or training
    early = export_checkpoint(cfg)
    assert early["steps"] == 3 and load_bundle(early["bundle"]).card.training["steps"] == 3
    import torch

    ckpt = torch.load(Path(cfg.out_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    exported = load_bundle(early["bundle"]).build_network().state_dict()
    name = next(k for k, v in ckpt.items() if v.is_floating_point() and v.numel() > 100)
    assert torch.allclose(exported[name].float(), ckpt[name].float(), atol=1e-2)
    result = train(cfg, resume=True)
    losses = result["losses"]
    assert result["steps"] == cfg.max_steps == len(losses)
    assert losses[:3] == first["losses"], "resume continued the same run"
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses
    # loss and validation plots beside the TensorBoard logs (issue 21)
    plots = {p.name: p for p in result["plots"]}
    assert set(plots) == {"loss.png", "validation.png"} and plots["loss.png"].parent == Path(cfg.out_dir) / "plots"
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots.values())
    bundle = load_bundle(result["bundle"])
    assert bundle.card.training["manifest_sha256"]
    assert bundle.card.training["steps"] == cfg.max_steps
    assert "not for clinical use" in bundle.card.intended_use
    assert set(bundle.card.metrics["validation"]) >= {"all/dice_WT", "FLAIR/dice_WT"}
    bundle.build_network()
    # the evaluation path on the same bundle: Dice/HD95 per region, markdown report with a plot
    from training.evaluate import evaluate, write_report
    from training.manifest import from_synth

    manifest = from_synth(Path(cfg.out_dir) / "synth")
    manifest.subjects = manifest.subjects[-1:]
    ev = evaluate(str(result["bundle"]), manifest, {"FLAIR": ["FLAIR"]}, device="cpu")
    assert set(ev["summary"]["FLAIR"]) >= {"dice_WT", "dice_TC", "dice_ET", "hd95_WT"}
    report = write_report(ev, Path(cfg.out_dir) / "eval", "tiny")
    assert "| FLAIR |" in report.read_text() and (report.parent / "dice.png").stat().st_size > 0
    # the summary recorded in the card; the bundle still loads (its weights are untouched)
    from training.evaluate import record_in_card

    record_in_card(str(result["bundle"]), "held_out", ev, "one synthetic subject", "pytest")
    card = load_bundle(result["bundle"]).card
    assert card.metrics["held_out"]["FLAIR"]["dice_WT"] == round(ev["summary"]["FLAIR"]["dice_WT"], 4)
    assert card.metrics["validation"], "earlier metrics are kept"
    # what the shipped demo card carries for the SEG and SR (issue 16): a retrained card keeps it
    assert [lab.tracking_id for lab in card.labels] == ["NCR", "ED", "ET"]
    assert all(lab.anatomic_region == ("12738006", "SCT", "Brain") for lab in card.labels)
    assert card.algorithm["family"][0] == "123110"


def test_bad_config_is_a_sentence(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[train]\nmax_step = 3\n[network.encoder]\nname = "swin3d"\n')
    assert main(["train", "finetune", "--config", str(bad)]) == 2
    assert "config key 'train.max_step': unknown key (did you mean 'max_steps'?)." in capsys.readouterr().err
    assert main(["train", "finetune", "--config", str(tmp_path / "missing.toml")]) == 2
