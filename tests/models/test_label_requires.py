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
