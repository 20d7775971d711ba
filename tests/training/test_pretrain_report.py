"""The label-efficiency bookkeeping: label counts, summaries over repeats, report and plots."""

from __future__ import annotations

import math
from pathlib import Path

import pytest


def test_label_counts_round_and_keep_one() -> None:
    from training.pretrain.label_efficiency import label_counts

    assert label_counts(40, [0.01, 0.1, 1.0]) == {0.01: 1, 0.1: 4, 1.0: 40}
    assert label_counts(7, [0.5]) == {0.5: 4}
    with pytest.raises(ValueError, match="outside"):
        label_counts(10, [0.0])


def _row(init: str, fraction: float, repeat: int, wt: float) -> dict[str, float | str | int]:
    return {"init": init, "fraction": fraction, "labelled": max(1, round(fraction * 40)), "repeat": repeat,
            "dice_WT": wt, "dice_TC": wt - 0.1, "dice_ET": wt - 0.2, "hd95_WT": 10.0 * (1 - wt),
            "hd95_TC": math.nan, "hd95_ET": 3.0}


def test_report_summarises_repeats_and_states_the_verdict(tmp_path: Path) -> None:
    from training.pretrain.report import summarise, write_report

    rows = [_row("scratch", 0.1, r, 0.50 + 0.02 * r) for r in (0, 1)]
    rows += [_row("prism", 0.1, r, 0.58 + 0.02 * r) for r in (0, 1)]
    rows += [_row("swin_ssl", 0.1, 0, 0.49), _row("scratch", 1.0, 0, 0.8), _row("prism", 1.0, 0, 0.81)]
    summary = summarise(rows)
    assert summary[("scratch", 0.1)]["dice_WT"] == pytest.approx(0.51)
    assert summary[("scratch", 0.1)]["dice_WT_sd"] == pytest.approx(0.01)
    assert math.isnan(summary[("prism", 0.1)]["hd95_TC"])
    cfg = {
        "data": {"train_subjects": 40, "test_subjects": 8, "unlabelled_subjects": 40, "sequences": ["T1", "FLAIR"], "voxel_mm": 3.0},
        "encoder": {"name": "swin3d"},
        "pretrain": {"objectives": ["swin_ssl", "prism"], "steps": 10},
        "finetune": {"fractions": [0.1, 1.0], "steps": 5},
    }
    report = write_report(rows, cfg, tmp_path / "docs", tmp_path / "work")
    text = report.read_text()
    assert (tmp_path / "docs" / "label-efficiency.png").stat().st_size > 1000
    assert "| prism | 10% | 4 | 0.590 ± 0.010 |" in text
    assert "| swin_ssl | scratch | -2.0 | n/a |" in text
    assert "best objective is **prism** with +8.0 Dice WT points" in text and "this meets the target" in text
