"""Encoder registry, heads and the save/load checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from models.encoders import ENCODER_NAMES, build_encoder, feature_shapes, load_encoder, save_encoder
from models.heads import ClassificationHead
from models.segmenter import build_segmenter

SMALL = {
    "swin3d": {"name": "swin3d", "in_channels": 2, "feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2],
               "window_size": 4},
    "vit3d": {"name": "vit3d", "in_channels": 2, "img_size": 32, "patch_size": 8, "hidden_size": 24, "mlp_dim": 48,
              "num_layers": 4, "num_heads": 2},
    "vit2d": {"name": "vit2d", "in_channels": 2, "img_size": 32, "patch_size": 8, "hidden_size": 24, "mlp_dim": 48,
              "num_layers": 4, "num_heads": 2},
}


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_registry_builds_every_encoder_with_documented_feature_shapes(name: str) -> None:
    enc = build_encoder(SMALL[name])
    spatial = [32] * enc.spatial_dims
    feats = enc(torch.randn(1, 2, *spatial))
    assert [tuple(f.shape[1:]) for f in feats] == feature_shapes(enc, spatial)
    assert enc.cfg["name"] == name


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_save_load_round_trip_gives_identical_outputs(name: str, tmp_path) -> None:
    enc = build_encoder(SMALL[name]).eval()
    x = torch.randn(1, 2, *([32] * enc.spatial_dims))
    save_encoder(tmp_path / "ckpt", enc, {"pretrain_objective": "test"})
    assert (tmp_path / "ckpt" / "encoder.safetensors").is_file()
    loaded, cfg = load_encoder(tmp_path / "ckpt")
    assert cfg["pretrain_objective"] == "test"
    with torch.no_grad():
        for a, b in zip(enc(x), loaded.eval()(x), strict=True):
            assert torch.equal(a, b)


def test_unknown_encoder_name_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match="Did you mean 'swin3d'"):
        build_encoder({"name": "swin3", "in_channels": 1})


def test_checkpoint_with_wrong_weights_is_refused(tmp_path) -> None:
    save_encoder(tmp_path / "a", build_encoder(SMALL["vit3d"]))
    other = dict(SMALL["vit3d"], hidden_size=48)
    (tmp_path / "a" / "encoder.json").write_text(__import__("json").dumps(other))
    with pytest.raises(ValueError, match="do not fit"):
        load_encoder(tmp_path / "a")


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_segmenter_outputs_full_resolution_logits(name: str) -> None:
    net = build_segmenter({"encoder": SMALL[name], "num_classes": 3})
    spatial = [64] * 3 if name == "swin3d" else [32] * net.encoder.spatial_dims
    assert net(torch.randn(2, 2, *spatial)).shape == (2, 3, *spatial)


def test_segmenter_loads_a_pretrained_encoder_checkpoint(tmp_path) -> None:
    enc = build_encoder(SMALL["swin3d"])
    save_encoder(tmp_path / "enc", enc)
    net = build_segmenter({"encoder": SMALL["swin3d"], "num_classes": 4, "encoder_checkpoint": str(tmp_path / "enc")})
    for key, value in enc.state_dict().items():
        assert torch.equal(net.encoder.state_dict()[key], value)


def test_classification_head_pools_every_level() -> None:
    enc = build_encoder(SMALL["swin3d"])
    head = ClassificationHead(enc.feature_channels, num_classes=5, hidden=16)
    assert head(enc(torch.randn(2, 2, 32, 32, 32))).shape == (2, 5)
