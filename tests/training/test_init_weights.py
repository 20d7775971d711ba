"""Warm start of fine-tuning: whole-network weights from a checkpoint or a bundle folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.finetune import load_init_weights


def test_load_init_weights_from_checkpoint_and_bundle(tmp_path: Path) -> None:
    from models.bundle import load_bundle

    bundle = load_bundle("brain-tumour-demo")
    net = bundle.build_network()
    from_bundle = load_init_weights(bundle.path)
    assert set(from_bundle) == set(net.state_dict())
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": net.state_dict(), "step": 1}, ckpt)
    from_ckpt = load_init_weights(ckpt)
    net.load_state_dict(from_ckpt)  # strict: every key present, shapes equal
    with pytest.raises(FileNotFoundError, match="init_weights"):
        load_init_weights(tmp_path / "nothing-here")
