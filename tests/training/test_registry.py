"""The model registry keeps every version and promotes one per name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.registry import ModelRegistry, RegistryError


def _bundle(tmp: Path, name: str, dice: float) -> Path:
    folder = tmp / f"{name}-{dice}"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"name": name, "version": "1.0", "metrics": {"dice_wt": dice}}))
    (folder / "weights.safetensors").write_bytes(b"not really weights")
    return folder


def test_register_and_promote_round_trip(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    first = reg.register(_bundle(tmp_path, "m", 0.8))
    second = reg.register(_bundle(tmp_path, "m", 0.9))
    assert [e.version for e in reg.versions("m")] == [first.version, second.version]
    assert reg.promoted("m") is None
    reg.promote("m", second.version)
    assert reg.promoted("m") is not None
    assert reg.current_bundle("m") == tmp_path / "reg" / second.path
    assert (reg.current_bundle("m") / "card.json").is_file()  # type: ignore[operator]
    # a fresh object reads the same index back
    assert ModelRegistry(tmp_path / "reg").promoted("m").metrics == {"dice_wt": 0.9}  # type: ignore[union-attr]


def test_refuses_non_bundle_and_unknown_version(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match=r"card\.json"):
        reg.register(tmp_path)
    reg.register(_bundle(tmp_path, "m", 0.5))
    with pytest.raises(RegistryError, match="no version"):
        reg.promote("m", "9.9")
    with pytest.raises(RegistryError, match="not in the registry"):
        reg.promote("other", "1")
