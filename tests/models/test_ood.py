"""The out-of-distribution score: the engine reports it, and the SR says so in one sentence above the card's threshold.

The in-distribution input is a synthetic subject (the engine the bundle was trained on); the
out-of-distribution one is the same T1 with its contrast inverted inside the head (CSF bright,
white matter dark: no scanner's T1). The SEG is written either way and the SR passes dciodvfy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.cli import main
from models.preprocess import OOD_QUANTILES, foreground_quantiles, ood_score
from tests.models.nifti_dicom import write_volume_as_dicom
from tests.support.dciodvfy import dciodvfy

SENTENCE = "The input looks unlike the model's training data"


@pytest.fixture(scope="module")
def t1() -> tuple[np.ndarray, np.ndarray]:
    import torch

    from training.synth import generate_subject

    torch.set_num_threads(2)
    s = generate_subject(9210, voxel_mm=2.0, tumour=True, sequences=("T1",))
    vol = next(iter(s.images.values()))
    return np.asarray(vol, dtype=np.float32), np.asarray(s.affine, dtype=np.float64)


def _inverted(data: np.ndarray) -> np.ndarray:
    from models.preprocess import foreground_mask

    head = foreground_mask(data[None], [True])
    out = data.copy()
    out[head] = data[head].max() + data[head].min() - data[head]
    return out


def test_score_is_zero_against_itself_and_positive_for_a_shifted_profile() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros((2, 20, 20, 20), dtype=np.float32)
    x[0] = rng.normal(0, 1, (20, 20, 20))
    q = foreground_quantiles(x, [True, False])
    assert set(q) == {0} and len(q[0]) == len(OOD_QUANTILES)
    assert ood_score(q, {0: list(q[0])}) == pytest.approx(0.0)
    assert ood_score(q, {0: list(q[0] + 0.5)}) == pytest.approx(0.5)
    assert ood_score(q, {1: [0.0] * len(OOD_QUANTILES)}) is None


def test_engine_reports_the_score_and_flags_an_inverted_t1(t1) -> None:
    from models.engine import get_engine

    engine = get_engine("brain-tumour-demo", device="cpu")
    data, affine = t1
    normal = engine.predict({"T1": data}, affine)
    odd = engine.predict({"T1": _inverted(data)}, affine)
    assert normal.ood_threshold is not None, "the shipped card has no preprocessing.ood"
    assert normal.ood_score is not None and odd.ood_score is not None
    assert not normal.out_of_distribution, (normal.ood_score, normal.ood_threshold)
    assert odd.out_of_distribution, (odd.ood_score, odd.ood_threshold)


def _sr_texts(path: Path) -> list[str]:
    ds = pydicom.dcmread(path)
    out, stack = [], list(ds.ContentSequence)
    while stack:
        item = stack.pop()
        if item.ValueType == "TEXT":
            out.append(str(item.TextValue))
        stack.extend(item.get("ContentSequence", []))
    return out


@pytest.mark.parametrize("inverted", [False, True], ids=["in-distribution", "out-of-distribution"])
def test_sr_says_so_only_for_an_out_of_distribution_input(t1, inverted: bool, tmp_path: Path, capsys) -> None:
    data, affine = t1
    write_volume_as_dicom(_inverted(data) if inverted else data, affine, tmp_path / "in", description="T1 MPRAGE")
    out = tmp_path / "out"
    assert main(["infer", str(tmp_path / "in"), "--out", str(out), "--device", "cpu", "--headers-only"]) == 0
    capsys.readouterr()
    assert (out / "seg.dcm").is_file(), "the SEG is written whatever the OOD score"
    report = dciodvfy(out / "sr.dcm")
    assert report.errors == [], report.output
    said = [t for t in _sr_texts(out / "sr.dcm") if t.startswith(SENTENCE)]
    if inverted:
        assert len(said) == 1 and "read the result with care." in said[0], said
    else:
        assert said == []
