"""Sequence dropout: weighted subsets, and the config key that sets the weights."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from training.datasets import SequenceDropoutd
from training.ft_config import parse_finetune_config


def _kept(t: SequenceDropoutd, n: int) -> Counter[tuple[int, ...]]:
    counts: Counter[tuple[int, ...]] = Counter()
    for _ in range(n):
        d = t({"image": np.ones((4, 2, 2, 2), dtype=np.float32), "present": np.ones(4, dtype=bool)})
        kept = tuple(int(i) for i in np.flatnonzero(d["present"]))
        # the zeroed channels are exactly the ones marked absent
        assert all(bool(d["image"][c].any()) == (c in kept) for c in range(4))
        counts[kept] += 1
    return counts


def test_uniform_without_weights_and_weighted_with() -> None:
    n = 3000
    uniform = SequenceDropoutd(keys="image", prob=1.0)
    uniform.set_random_state(0)
    flair_uniform = _kept(uniform, n)[(3,)] / n
    assert abs(flair_uniform - 1 / 15) < 0.02  # 15 non-empty subsets of four channels

    weighted = SequenceDropoutd(keys="image", prob=1.0, weights={(3,): 6.0})
    weighted.set_random_state(0)
    counts = _kept(weighted, n)
    assert abs(counts[(3,)] / n - 6 / 20) < 0.03  # weight 6 against 14 subsets of weight 1
    assert abs(counts[(0, 1, 2, 3)] / n - 1 / 20) < 0.02
    assert len(counts) == 15  # every subset still drawn


def test_all_zero_weights_drop_nothing() -> None:
    # two present channels: subsets (0,), (1,), (0, 1), all weighted 0 -> no probability to draw from
    t = SequenceDropoutd(keys="image", prob=1.0, weights={(0,): 0.0, (1,): 0.0, (0, 1): 0.0})
    t.set_random_state(0)
    d = t({"image": np.ones((2, 2, 2, 2), dtype=np.float32), "present": np.ones(2, dtype=bool)})
    assert d["present"].all() and d["image"].all()


def _raw(weights: object) -> dict[str, object]:
    return {"network": {"encoder": {"name": "swin3d"}}, "train": {"sequence_dropout_weights": weights}}


def test_config_turns_names_into_channel_indices() -> None:
    cfg = parse_finetune_config(_raw({"FLAIR": 6.0, "FLAIR+T2": 2}))
    assert cfg.sequence_dropout_weights == {(3,): 6.0, (2, 3): 2.0}
    assert parse_finetune_config(_raw({})).sequence_dropout_weights == {}


@pytest.mark.parametrize(("weights", "words"), [
    ({"DWI": 2.0}, "DWI"), ({"FLAIR": -1.0}, "≥ 0"), ({"FLAIR": "x"}, "valid number"), ([1, 2], "valid dictionary"),
])
def test_config_refuses_bad_weights_naming_the_key(weights: object, words: str) -> None:
    with pytest.raises(ValueError, match="sequence_dropout_weights") as err:
        parse_finetune_config(_raw(weights))
    assert words in str(err.value)
