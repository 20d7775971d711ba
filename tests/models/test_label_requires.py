"""Card ``preprocessing.label_requires``: a label none of whose sequences is present is not assessed."""

from __future__ import annotations

import pytest
import torch

from models.bundle import BundleError
from models.engine import decide_labels, withhold_labels


def _probs() -> torch.Tensor:
    p = torch.zeros((4, 2, 2, 2))
    p[0] = 0.2
    p[2] = 0.7  # oedema wins everywhere
    p[3] = 0.1
    return p


def test_oedema_withheld_without_flair_or_t2() -> None:
    probs = _probs()
    withheld = withhold_labels(probs, {"2": ["FLAIR", "T2"]}, ["T1"])
    assert withheld == {2: ["FLAIR", "T2"]}
    assert torch.allclose(probs.sum(dim=0), torch.ones(2, 2, 2))
    assert not (decide_labels(probs) == 2).any()


@pytest.mark.parametrize("present", [["FLAIR"], ["T2"], ["T1", "T2"]])
def test_oedema_kept_with_either(present: list[str]) -> None:
    probs = _probs()
    assert withhold_labels(probs, {"2": ["FLAIR", "T2"]}, present) == {}
    assert (decide_labels(probs) == 2).all()


def test_unknown_label_is_a_sentence() -> None:
    with pytest.raises(BundleError, match="label_requires names label '7'"):
        withhold_labels(_probs(), {"7": ["FLAIR"]}, ["T1"])


def test_sr_says_oedema_was_not_assessed_on_t1_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A T1 alone through the whole offline path: the SR says oedema was not assessed, and passes dciodvfy."""
    import numpy as np
    import pydicom

    from dicom_node.cli import main
    from tests.models.nifti_dicom import write_volume_as_dicom
    from tests.support.dciodvfy import dciodvfy
    from training.synth import generate_subject

    torch.set_num_threads(2)
    s = generate_subject(9211, voxel_mm=2.0, tumour=True, sequences=("T1",))
    data = np.asarray(next(iter(s.images.values())), dtype=np.float32)
    write_volume_as_dicom(data, np.asarray(s.affine, dtype=np.float64), tmp_path / "in", description="T1 MPRAGE")
    out = tmp_path / "out"
    assert main(["infer", str(tmp_path / "in"), "--out", str(out), "--device", "cpu", "--headers-only"]) == 0
    report = dciodvfy(out / "sr.dcm")
    assert report.errors == [], report.output
    texts, stack = [], list(pydicom.dcmread(out / "sr.dcm").ContentSequence)
    while stack:
        item = stack.pop()
        if item.ValueType == "TEXT":
            texts.append(str(item.TextValue))
        stack.extend(item.get("ContentSequence", []))
    assert any(t.startswith("Oedema was not assessed: it needs FLAIR") for t in texts), texts


def test_the_demo_card_claims_nothing_from_t1c_alone_and_no_oedema_without_flair() -> None:
    """The shipped card's rules (measured on tumour-free selection subjects; see the card's note)."""
    from models.bundle import load_bundle

    requires = load_bundle("brain-tumour-demo").card.preprocessing["label_requires"]
    assert set(withhold_labels(_probs(), requires, ["T1C"])) == {1, 2, 3}  # scalp fat is not enhancing tumour
    assert set(withhold_labels(_probs(), requires, ["T2"])) == {2}  # CSF is not oedema
    assert set(withhold_labels(_probs(), requires, ["T1"])) == {2}
    assert withhold_labels(_probs(), requires, ["FLAIR"]) == {}
    assert withhold_labels(_probs(), requires, ["T1C", "FLAIR"]) == {}
