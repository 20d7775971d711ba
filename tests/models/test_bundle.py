"""Bundles: save/load, SHA-256 refusal, look-up by name, the shipped demo bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.bundle import NOT_CLINICAL, BundleError, Card, LabelInfo, list_bundles, load_bundle, save_bundle
from models.segmenter import build_segmenter

NET = {"encoder": {"name": "swin3d", "in_channels": 2, "feature_size": 12, "depths": [1, 1, 1, 1],
                   "num_heads": [1, 1, 2, 2], "window_size": 4}, "num_classes": 2}
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "bundles" / "brain-tumour-demo"


def _card(name: str = "unit-bundle") -> Card:
    lab = LabelInfo(1, "Oedema", ("49755003", "SCT", "Morphologically Altered Structure"), ("79654002", "SCT", "Edema"),
                    (60, 200, 80))
    return Card(name=name, version="1.0", task="segmentation", labels=[lab], channels=["T2", "FLAIR"],
                required_sequences=[], optional_sequences=["T2", "FLAIR"], network=NET,
                preprocessing={"spacing_mm": [4, 4, 4], "roi_size": [64, 64, 64]})


def test_save_then_load_restores_the_weights(tmp_path) -> None:
    torch.manual_seed(0)
    net = build_segmenter(NET)
    b = save_bundle(tmp_path / "b", _card(), net.state_dict())
    assert len(b.card.weights_sha256) == 64
    loaded = load_bundle(tmp_path / "b").build_network()
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert load_bundle(tmp_path / "b").card.intended_use == NOT_CLINICAL


def test_changed_weights_are_refused_with_a_sentence(tmp_path) -> None:
    save_bundle(tmp_path / "b", _card(), build_segmenter(NET).state_dict())
    with open(tmp_path / "b" / "weights.safetensors", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleError, match="card and weights do not belong together"):
        load_bundle(tmp_path / "b")


def test_card_with_another_hash_is_refused(tmp_path) -> None:
    save_bundle(tmp_path / "b", _card(), build_segmenter(NET).state_dict())
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    card["weights_sha256"] = "0" * 64
    (tmp_path / "b" / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="is refused"):
        load_bundle(tmp_path / "b")


def test_lookup_by_name_in_a_models_dir_and_did_you_mean(tmp_path) -> None:
    save_bundle(tmp_path / "unit-bundle", _card(), build_segmenter(NET).state_dict())
    assert load_bundle("unit-bundle", [tmp_path]).name == "unit-bundle"
    assert "unit-bundle" in [b.name for b in list_bundles([tmp_path])]
    with pytest.raises(BundleError, match="Did you mean 'unit-bundle'"):
        load_bundle("unit-bundel", [tmp_path])


def test_shipped_demo_bundle_loads_and_says_it_is_not_clinical() -> None:
    b = load_bundle("brain-tumour-demo")
    assert b.path.resolve() == SHIPPED.resolve()
    assert "not for clinical use" in b.card.intended_use
    assert [lab.value for lab in b.card.labels] == [1, 2, 3]
    assert (SHIPPED / "weights.safetensors").stat().st_size <= 20 * 1024 * 1024
    net = b.build_network()
    assert sum(p.numel() for p in net.parameters()) > 0
