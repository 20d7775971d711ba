"""``training.peak_sweep``: every candidate rule on the same predictions, Dice and false tumour per value."""

from __future__ import annotations

import numpy as np

from training.peak_sweep import Case, sweep


def _blob(shape: tuple[int, int, int], box: tuple[slice, ...], peak: float) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros(shape, np.uint8)
    prob = np.zeros(shape, np.float32)
    labels[box], prob[box] = 2, 0.7
    centre = tuple((s.start + s.stop) // 2 for s in box)
    prob[centre] = peak
    return labels, prob


def test_each_value_is_applied_to_the_same_predictions() -> None:
    shape = (12, 12, 12)
    box = (slice(2, 8),) * 3
    tumour_labels, tumour_prob = _blob(shape, box, 0.96)
    truth = tumour_labels > 0
    free_labels, free_prob = _blob(shape, (slice(3, 5),) * 3, 0.9)      # 8 voxels of 2 mL each
    cases = [Case("t", truth, tumour_labels, tumour_prob, 1.0), Case("f", None, free_labels, free_prob, 2.0)]
    rows = sweep(cases, [0.0, 0.95, 0.97])
    assert [r["peak"] for r in rows] == [0.0, 0.95, 0.97]
    assert rows[0]["dice_wt"] == 1.0 and rows[0]["false_ml"] == {"f": 16.0}
    assert rows[1]["dice_wt"] == 1.0 and rows[1]["false_ml"] == {"f": 0.0}
    assert rows[2]["dice_wt"] == 0.0 and rows[2]["dice_wt_min"] == 0.0 and rows[2]["false_ml"] == {"f": 0.0}
    assert cases[1].labels.sum() == 16                                   # the predictions are not changed


def test_the_study_scope_keeps_a_study_with_a_sure_component_whole() -> None:
    shape = (16, 16, 16)
    labels, prob = _blob(shape, (slice(2, 8),) * 3, 0.96)
    satellite = (slice(11, 13),) * 3                                    # unsure, but true tumour
    labels[satellite], prob[satellite] = 2, 0.7
    truth = labels > 0
    free_labels, free_prob = _blob(shape, (slice(3, 5),) * 3, 0.9)
    cases = [Case("t", truth, labels, prob, 1.0), Case("f", None, free_labels, free_prob, 1.0)]
    per_study, per_component = sweep(cases, [0.95], "study")[0], sweep(cases, [0.95], "component")[0]
    assert per_study["dice_wt"] == 1.0 and per_study["false_ml"] == {"f": 0.0}
    assert per_component["dice_wt"] < 1.0 and per_component["false_ml"] == {"f": 0.0}
