"""Scanner-shift views (``training.pretrain.acquisition``) and their wiring into ``prism`` and ``swin_ssl``.

Data: white noise and random tensors (the properties are about the transform, not about anatomy)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from training.pretrain.acquisition import scanner_shift


def _batch(b: int = 3, c: int = 4, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    image = torch.randn(b, c, n, n, n, generator=g)
    present = torch.ones(b, c)
    present[1, 2] = 0.0
    image[1, 2] = 0.0
    return image, present


def _step_power(x: torch.Tensor, dim: int) -> float:
    """Mean squared difference of neighbours along ``dim`` (white noise: 2 x variance; smoothing lowers it)."""
    return float((x.narrow(dim, 1, x.shape[dim] - 1) - x.narrow(dim, 0, x.shape[dim] - 1)).pow(2).mean())


def test_zero_strength_is_the_identity_and_a_seed_repeats_the_draw() -> None:
    image, present = _batch()
    assert torch.equal(scanner_shift(image, present, 0.0), image)
    torch.manual_seed(3)
    one = scanner_shift(image, present, 1.0)
    torch.manual_seed(3)
    two = scanner_shift(image, present, 1.0)
    assert torch.equal(one, two)
    assert float((one - image).abs().mean()) > 0.05  # it does shift


def test_absent_channels_stay_zero_and_each_channel_keeps_its_moments() -> None:
    image, present = _batch()
    torch.manual_seed(0)
    out = scanner_shift(image, present, 1.0)
    assert float(out[1, 2].abs().max()) == 0.0
    for i in range(image.shape[0]):
        for c in range(image.shape[1]):
            if present[i, c]:
                assert float(out[i, c].mean()) == pytest.approx(float(image[i, c].mean()), abs=1e-4)
                assert float(out[i, c].std()) == pytest.approx(float(image[i, c].std()), rel=1e-3)


def test_one_scanner_per_sample_shifts_every_sequence_alike() -> None:
    """Gamma, coil field and slice profile are the sample's (one scanner); only the noise differs per series."""
    image, present = _batch()
    image[0, 1] = image[0, 0]  # two identical channels of one sample ...
    image[2, 0] = image[0, 0]  # ... and the same image in another sample (another scanner)
    torch.manual_seed(5)
    out = scanner_shift(image, present, 1.0)
    same_scanner = float((out[0, 0] - out[0, 1]).std())
    other_scanner = float((out[0, 0] - out[2, 0]).std())
    assert same_scanner < 0.2, same_scanner  # the noise of two series, SD at most 0.1 each
    assert other_scanner > 2 * same_scanner, (same_scanner, other_scanner)


def test_slice_blur_acts_through_plane_only() -> None:
    """Shifted white noise keeps its neighbour differences in-plane and loses them along S (the last axis)."""
    torch.manual_seed(11)
    image = torch.randn(6, 1, 24, 24, 24)
    out = scanner_shift(image, torch.ones(6, 1), 2.0)
    along_s = _step_power(out, 4)
    in_plane = min(_step_power(out, 2), _step_power(out, 3))
    assert along_s < 0.7 * in_plane, (along_s, in_plane)
    assert max(_step_power(out, 2), _step_power(out, 3)) < 1.2 * in_plane  # X and Y alike


def test_a_crop_that_is_not_a_batch_of_volumes_is_refused() -> None:
    with pytest.raises(ValueError, match="B, C, X, Y, Z"):
        scanner_shift(torch.zeros(2, 8, 8, 8), torch.ones(2, 1), 1.0)


def test_a_strength_out_of_range_names_the_option() -> None:
    from training.pretrain.options import objective_options

    with pytest.raises(ValueError, match="scanner_shift"):
        objective_options("prism", {"scanner_shift": 5.0})


@pytest.mark.parametrize("name", ["prism", "swin_ssl"])
def test_the_objectives_feed_shifted_views_to_the_encoder(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``scanner_shift`` above 0 the encoder sees other inputs than with it off (same seed)."""
    import importlib

    from models.encoders import build_encoder
    from training.pretrain.registry import build_objective

    module = importlib.import_module(f"training.pretrain.objectives.{name}")
    seen: list[torch.Tensor] = []
    real = module.deepest_features

    def spy(encoder: Any, x: torch.Tensor) -> torch.Tensor:
        seen.append(x.detach().clone())
        return real(encoder, x)

    monkeypatch.setattr(module, "deepest_features", spy)
    image, present = _batch(b=2, n=32)
    batch = {"image": image, "present": present, "params": torch.zeros(2, 4, 3), "param_mask": torch.zeros(2, 4, 3)}
    enc_cfg = {"name": "swin3d", "in_channels": 4, "feature_size": 12, "depths": [1, 1, 1, 1],
               "num_heads": [1, 2, 2, 4], "window_size": 4}
    for shift in (0.0, 1.0):
        torch.manual_seed(0)
        objective = build_objective(name, build_encoder(enc_cfg), {"scanner_shift": shift, "mask_patch": 4}, 4)
        torch.manual_seed(1)
        loss, _ = objective(batch)
        assert torch.isfinite(loss)
    off, on = seen
    assert off.shape == on.shape
    assert float((off - on).abs().mean()) > 0.05
