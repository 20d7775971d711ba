"""``training.evaluate.summarise``: BraTS Dice, and the same over subjects that have each region.

A subject without enhancing tumour in its truth scores ET Dice 1 when none is found and 0 when
a single voxel is (BraTS). The summary keeps that mean (comparable with earlier cards) and
adds the mean over the subjects that have the region, how many lack it and how much was found
there, so a speck of false enhancement is told apart from worse segmentation.
"""

from __future__ import annotations

import pytest

from training.evaluate import summarise, write_report


def _row(subject: str, et_true: float, et_pred: float, dice_et: float, subset: str = "all") -> dict:
    return {"subject": subject, "subset": subset, "seconds": 1.0, "true_ml": 50.0, "pred_ml": 50.0,
            "dice_WT": 0.9, "dice_TC": 0.8, "dice_ET": dice_et,
            "true_ml_WT": 50.0, "true_ml_TC": 10.0, "true_ml_ET": et_true,
            "pred_ml_WT": 50.0, "pred_ml_TC": 10.0, "pred_ml_ET": et_pred}


def test_a_speck_of_enhancement_where_there_is_none_is_reported_apart() -> None:
    rows = [_row("a", 5.0, 5.0, 0.8), _row("b", 5.0, 4.0, 0.8), _row("c", 0.0, 0.04, 0.0)]
    s = summarise(rows, ["all"])["all"]
    assert s["dice_ET"] == pytest.approx(1.6 / 3)  # BraTS, as cards always had it
    assert s["dice_ET_present"] == pytest.approx(0.8)
    assert s["ET_absent"] == 1 and s["ET_absent_max_pred_ml"] == pytest.approx(0.04)
    assert s["WT_absent"] == 0 and s["dice_WT_present"] == pytest.approx(0.9)
    assert "hd95_ET" not in s  # rows without HD95 give none


def test_rows_from_before_the_region_volumes_count_every_subject_as_having_it() -> None:
    old = [{k: v for k, v in _row(s, 0.0, 0.0, d).items() if "_ml_" not in k} for s, d in (("a", 1.0), ("b", 0.5))]
    s = summarise(old, ["all"])["all"]
    assert s["dice_ET_present"] == pytest.approx(0.75) and s["ET_absent"] == 0


def test_the_report_says_which_regions_were_absent(tmp_path) -> None:
    rows = [_row("a", 5.0, 5.0, 0.8), _row("c", 0.0, 0.04, 0.0)]
    report = write_report({"rows": rows, "summary": summarise(rows, ["all"])}, tmp_path, "t").read_text()
    assert "all ET 0.800 (1 subjects; 1 without it, at most 0.04 mL found there)" in report
