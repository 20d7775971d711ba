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


def test_a_warm_start_from_a_bundle_keeps_its_card_decisions(tmp_path: Path) -> None:
    """label_requires and the OOD reference were chosen on the bundle's selection runs: a fine-tuned
    successor keeps them (stage 7 was exported without them and would have claimed oedema from T2 alone)."""
    import json

    from models.bundle import load_bundle
    from training.export import CARRIED_PREPROCESSING, carried_preprocessing

    bundle = load_bundle("brain-tumour-demo")
    shipped = json.loads((bundle.path / "card.json").read_text())["preprocessing"]
    carried = carried_preprocessing(bundle.path)
    assert set(carried) == set(CARRIED_PREPROCESSING)
    assert carried == {k: shipped[k] for k in CARRIED_PREPROCESSING}
    assert carried["label_requires"]["2"] == ["FLAIR"]
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "step": 1}, ckpt)
    assert carried_preprocessing(ckpt) == {} and carried_preprocessing("") == {}
