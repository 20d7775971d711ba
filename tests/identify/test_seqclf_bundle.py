"""The shipped pixel classifier bundle: small, documented, sha256-checked, working."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

BUNDLE = Path(__file__).resolve().parents[2] / "models" / "bundles" / "sequence-classifier"


def test_bundle_is_small_and_says_what_it_is() -> None:
    weights = BUNDLE / "weights.safetensors"
    assert weights.is_file() and weights.stat().st_size < 5 * 1024 * 1024
    card = json.loads((BUNDLE / "card.json").read_text())
    assert card["task"] == "sequence-classification"
    assert card["required_sequences"] == []
    assert "synthetic" in card["intended_use"].lower() and "not for clinical use" in card["intended_use"].lower()
    assert "synth" in card["training"]["data"]
    assert 0.5 <= card["preprocessing"]["temperature"] <= 8.0
    assert card["metrics"]["validation_series_accuracy"] >= 0.75


def test_loads_and_predicts_a_distribution() -> None:
    import torch

    from models.seqclf import load_sequence_classifier

    torch.set_num_threads(1)
    clf = load_sequence_classifier()
    assert set(clf.labels) == {"T1", "T2", "FLAIR", "PD", "DWI", "ADC", "SWI"}
    rng = np.random.default_rng(0)
    probs = clf.predict(rng.random((5, 80, 64)).astype(np.float32) * 1000)
    assert set(probs) == set(clf.labels)
    assert abs(sum(probs.values()) - 1.0) < 1e-5
    with pytest.raises(ValueError, match="slices, rows, cols"):
        clf.predict(np.zeros((4, 4)))


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    from models.bundle import BundleError
    from models.seqclf import load_sequence_classifier

    copy = tmp_path / "sequence-classifier"
    shutil.copytree(BUNDLE, copy)
    data = bytearray((copy / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256"):
        load_sequence_classifier(copy)
