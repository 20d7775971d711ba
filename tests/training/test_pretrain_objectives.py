"""Each pretraining objective learns (loss down on a repeated batch) and yields an encoder that
fine-tuning loads. Data: four subjects from the project's synthetic engine at 4 mm."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.pretrain_support import OBJECTIVES_3D, synth_subjects, tiny_raw

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_subjects(tmp_path_factory.getbasetemp())


def _objective_and_batch(name: str, data_dir: Path, tmp_path: Path):
    from models.encoders import build_encoder
    from training.pretrain.config import parse_config
    from training.pretrain.data import PretrainDataset, collect_subjects
    from training.pretrain.registry import build_objective

    cfg = parse_config(tiny_raw(name, data_dir, tmp_path / "run"))
    torch.manual_seed(0)
    encoder = build_encoder(cfg.encoder)
    objective = build_objective(name, encoder, cfg.options, int(cfg.encoder["in_channels"]))
    data = cfg.stages[0].data
    ds = PretrainDataset(
        collect_subjects(data.sources), data.sequences, data.patch, data.voxel_mm,
        slice_2d=objective.spatial_dims == 2, min_sequences=objective.min_sequences, seed=0,
    )
    n = data.batch_size
    items = [ds[i % len(ds)] for i in range(n)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    return cfg, encoder, objective, batch


def _train_repeated(objective, batch, steps: int, lr: float) -> list[float]:
    opt = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=lr)
    losses = []
    for step in range(steps):
        torch.manual_seed(1234)  # same masks, rotations and crops every step: only the weights change
        loss, parts = objective(batch)
        assert all(torch.isfinite(torch.tensor(v)) for v in parts.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        objective.after_step(step, steps)
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("name", OBJECTIVES_3D)
def test_objective_loss_goes_down_and_encoder_loads_into_finetuning(name: str, data_dir: Path, tmp_path: Path) -> None:
    from models.encoders import load_encoder, save_encoder
    from models.segmenter import build_segmenter

    cfg, encoder, objective, batch = _objective_and_batch(name, data_dir, tmp_path)
    assert batch["present"].sum() > 0 and batch["image"].abs().sum() > 0
    losses = _train_repeated(objective, batch, steps=10, lr=1e-3)
    assert losses[-1] < 0.9 * losses[0], f"{name} loss did not go down: {losses}"

    folder = save_encoder(tmp_path / "enc", encoder, {"pretraining": {"objective": name}})
    loaded, stored = load_encoder(folder)
    assert stored["pretraining"]["objective"] == name
    for (k, a), (_, b) in zip(encoder.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    seg = build_segmenter({"encoder": cfg.encoder, "num_classes": 4, "encoder_checkpoint": str(folder), "norm": "batch"})
    for (k, a), (_, b) in zip(encoder.state_dict().items(), seg.encoder.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    seg.eval()
    with torch.no_grad():
        out = seg(batch["image"])
    assert out.shape == (batch["image"].shape[0], 4, *batch["image"].shape[2:])


def test_dino2d_distils_and_teacher_follows_student(data_dir: Path, tmp_path: Path) -> None:
    from models.encoders import load_encoder, save_encoder
    from training.pretrain.adapters import SliceSegmenter

    _, encoder, objective, batch = _objective_and_batch("dino2d", data_dir, tmp_path)
    assert batch["image"].ndim == 4  # axial slices
    # with the teacher and its centre held still, the student's distillation loss must fall
    objective.base_momentum = 1.0
    objective.center_momentum = 1.0
    teacher_before = [p.clone() for p in objective.teacher.parameters()]
    losses = _train_repeated(objective, batch, steps=8, lr=1e-3)
    assert losses[-1] < 0.95 * losses[0], f"dino2d loss did not go down: {losses}"
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, objective.teacher.parameters(), strict=True))
    # with EMA on, the teacher moves towards the student
    objective.base_momentum = 0.5
    dist = sum(float((s - t).detach().abs().sum()) for s, t in zip(encoder.parameters(), objective.teacher.parameters(), strict=True))
    objective.after_step(0, 10)
    dist2 = sum(float((s - t).detach().abs().sum()) for s, t in zip(encoder.parameters(), objective.teacher.parameters(), strict=True))
    assert dist > 0 and dist2 < 0.6 * dist
    folder = save_encoder(tmp_path / "enc2d", encoder)
    loaded, _ = load_encoder(folder)
    seg = SliceSegmenter(loaded, num_classes=4, mode="frozen")
    out = seg(batch["image"])
    assert out.shape == (batch["image"].shape[0], 4, *batch["image"].shape[2:])


def test_lora_adapters_start_as_identity_and_train_alone() -> None:
    from models.encoders import build_encoder
    from training.pretrain.adapters import SliceSegmenter, add_lora, trainable_parameters

    cfg = {"name": "vit2d", "in_channels": 4, "img_size": [32, 32], "patch_size": 8, "hidden_size": 48,
           "mlp_dim": 96, "num_layers": 2, "num_heads": 2}
    torch.manual_seed(0)
    enc = build_encoder(cfg)
    x = torch.randn(2, 4, 32, 32)
    before = enc(x)[-1].detach()
    n = add_lora(enc, rank=2)
    assert n == 4  # qkv and out_proj in each of two blocks
    assert torch.allclose(enc(x)[-1], before, atol=1e-6)
    names = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    seg = SliceSegmenter(build_encoder(cfg), num_classes=3, mode="lora", lora_rank=2)
    seg(x).sum().backward()
    assert all(p.grad is not None for p in trainable_parameters(seg))
    with pytest.raises(ValueError, match=r"no nn\.Linear layer"):
        add_lora(torch.nn.Conv2d(1, 1, 1))
