"""The pretraining run: config checks, data sources, checkpoints + resume, and 2-process DDP."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.pretrain_support import REPO, synth_subjects, tiny_raw, write_toml

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_subjects(tmp_path_factory.getbasetemp())


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from training.pretrain.config import load_config

    raw = tiny_raw("prism", tmp_path, tmp_path / "out")
    raw["optim"]["learning_rate"] = 1.0
    with pytest.raises(ValueError, match=r"config key 'optim\.learning_rate': unknown key"):
        load_config(write_toml(raw, tmp_path / "a.toml"))
    raw = tiny_raw("prism", tmp_path, tmp_path / "out")
    raw["objective"] = "prisn"
    with pytest.raises(ValueError, match="Did you mean 'prism'"):
        load_config(write_toml(raw, tmp_path / "b.toml"))
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_every_shipped_pretrain_config_parses() -> None:
    from training.pretrain.config import load_config

    configs = sorted((REPO / "training" / "configs").glob("pretrain-*.toml"))
    names = {p.stem for p in configs}
    for obj in ("swin_ssl", "cross_sequence", "prism", "dino2d"):
        assert f"pretrain-{obj}" in names and f"pretrain-{obj}-tiny" in names
    for path in configs:
        cfg = load_config(path)
        assert cfg.total_steps > 0
    assert [s.name for s in load_config(REPO / "training/configs/pretrain-swin_ssl.toml").stages] == ["general", "target"]


def test_data_sources_manifest_and_missing_sequences(data_dir: Path, tmp_path: Path) -> None:
    from training.pretrain.data import PretrainDataset, collect_subjects

    subjects = sorted(data_dir.iterdir())
    first = next(p for p in subjects if p.is_dir())
    manifest = {
        "version": 1,
        "subjects": [
            {"id": "only-flair", "sequences": {"FLAIR": {"path": str(first / "FLAIR.nii.gz"), "meta": {"tr": 9000.0, "te": 90.0}}}},
            {"id": "t1-t2", "sequences": {"T1": {"path": str(first / "T1.nii.gz")}, "T2": str(first / "T2.nii.gz")}},
        ],
    }
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    found = collect_subjects([tmp_path / "m.json", data_dir])
    assert [s.subject_id for s in found[:2]] == ["only-flair", "t1-t2"]
    assert found[0].params == {"FLAIR": {"tr": 9000.0, "te": 90.0}}
    assert found[2].params["T1"]["tr"] > 0  # from the engine's params.json
    ds = PretrainDataset(found, ["T1", "T1C", "T2", "FLAIR"], [32, 32, 32], 4.0)
    item = ds[0]
    assert item["image"].shape == (4, 32, 32, 32)
    assert item["present"].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert float(item["image"][:3].abs().sum()) == 0.0 and float(item["image"][3].abs().sum()) > 0
    assert item["param_mask"][3].tolist() == [1.0, 1.0, 0.0]
    pairs = PretrainDataset(found, ["T1", "T1C", "T2", "FLAIR"], [32, 32, 32], 4.0, min_sequences=2)
    assert "only-flair" not in [s.subject_id for s in pairs.subjects]
    with pytest.raises(ValueError, match="does not exist"):
        collect_subjects([tmp_path / "nowhere"])


def test_masking_hides_whole_patches_at_the_ratio() -> None:
    from training.pretrain.masking import masked_mse, random_patch_mask

    m = random_patch_mask(3, (32, 32, 32), 8, 0.5, generator=torch.Generator().manual_seed(0))
    assert m.shape == (3, 1, 32, 32, 32) and m.dtype == torch.bool
    assert m.float().mean(dim=(1, 2, 3, 4)).tolist() == [0.5, 0.5, 0.5]
    coarse = m[:, 0, ::8, ::8, ::8]
    assert torch.equal(m, coarse.repeat_interleave(8, 1).repeat_interleave(8, 2).repeat_interleave(8, 3).unsqueeze(1))
    x = torch.zeros(3, 2, 32, 32, 32)
    y = torch.ones_like(x)
    assert float(masked_mse(x, y, m)) == 1.0
    assert float(masked_mse(x, y, m, torch.tensor([[1, 0]] * 3))) == 1.0
    with pytest.raises(ValueError, match="multiple of the mask patch"):
        random_patch_mask(1, (30, 32, 32), 8, 0.5)


def test_run_checkpoints_resumes_and_saves_encoder(data_dir: Path, tmp_path: Path) -> None:
    from dicom_node.cli import main as cli
    from models.encoders import load_encoder
    from training.pretrain.run import main

    out = tmp_path / "run"
    cfg = write_toml(tiny_raw("swin_ssl", data_dir, out), tmp_path / "swin.toml")
    assert cli(["train", "pretrain", "--config", str(cfg), "--max-steps", "3"]) == 0
    assert (out / "checkpoint.pt").is_file() and list((out / "tb").iterdir())
    assert len(json.loads((out / "history.json").read_text())) == 3
    assert main(argparse.Namespace(config=str(cfg), max_steps=5, resume=True)) == 0
    hist = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in hist] == [1, 2, 3, 4, 5]
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 5
    encoder, stored = load_encoder(out / "encoder")
    assert stored["pretraining"] == {"objective": "swin_ssl", "steps": 5, "config": str(cfg)}
    prefix = "encoder."
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, state["objective"][prefix + k]), k


def test_run_refuses_bad_input_with_a_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.pretrain.run import main

    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = write_toml(tiny_raw("prism", empty, tmp_path / "out"), tmp_path / "p.toml")
    assert main(argparse.Namespace(config=str(cfg), max_steps=2, resume=False)) == 2
    assert "holds no NIfTI volume" in capsys.readouterr().err
    assert main(argparse.Namespace(config=str(cfg), max_steps=2, resume=True)) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_torchrun_two_processes_end_with_identical_weights(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    raw = tiny_raw("prism", data_dir, out)
    raw["run"]["threads"] = 1
    cfg = write_toml(raw, tmp_path / "ddp.toml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "training.pretrain.run", "--config", str(cfg), "--max-steps", "3"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = [(out / f"rank-{r}.sha256").read_text().strip() for r in (0, 1)]
    assert len(digests[0]) == 64 and digests[0] == digests[1]
    assert (out / "encoder" / "encoder.safetensors").is_file()
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 3
