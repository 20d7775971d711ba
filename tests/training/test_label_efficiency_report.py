"""The label-efficiency bookkeeping: summaries, paired differences with their interval, collapsed cells, report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _row(arm: str, k: int, test: str, repeat: int, wt: float, tc: float = 0.5, et: float = 0.5) -> dict[str, Any]:
    return {"arm": arm, "labelled": k, "test": test, "repeat": repeat, "dice_wt": wt, "dice_tc": tc, "dice_et": et,
            "hd95_wt": 10.0 * (1 - wt), "hd95_tc": math.nan, "hd95_et": 3.0}


def test_summary_uses_the_sample_sd() -> None:
    from training.pretrain.report import summarise

    rows = [_row("scratch", 5, "other-protocol", r, v) for r, v in enumerate((0.5, 0.6, 0.7))]
    s = summarise(rows)[("scratch", 5, "other-protocol")]
    assert s["dice_wt"] == pytest.approx(0.6) and s["dice_wt_sd"] == pytest.approx(0.1)
    assert math.isnan(s["hd95_tc"]) and s["repeats"] == 3
    assert math.isnan(summarise(rows[:1])[("scratch", 5, "other-protocol")]["dice_wt_sd"])


def test_paired_difference_is_taken_repeat_by_repeat_with_a_t_interval() -> None:
    from training.pretrain.report import paired_difference

    base = [0.50, 0.70, 0.60]  # large spread between repeats ...
    gain = [0.06, 0.05, 0.07]  # ... but the same gain in each: the paired interval is narrow
    rows = [_row("scratch", 5, "other-protocol", r, b) for r, b in enumerate(base)]
    rows += [_row("prism", 5, "other-protocol", r, b + g) for r, (b, g) in enumerate(zip(base, gain, strict=True))]
    rows += [_row("prism", 5, "same-protocol", 0, 0.9)]
    d = paired_difference(rows, "prism", "scratch", 5, "other-protocol")
    half = 4.302652729911275 * np.std(gain, ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.06)
    assert (d["low"], d["high"]) == (pytest.approx(0.06 - half), pytest.approx(0.06 + half))
    assert d["low"] > 0.0
    # a repeat only one arm has is left out of the pairs
    rows.append(_row("prism", 5, "other-protocol", 3, 0.1))
    assert paired_difference(rows, "prism", "scratch", 5, "other-protocol")["n"] == 3
    one = paired_difference(rows, "prism", "scratch", 5, "same-protocol")
    assert one["n"] == 0 and math.isnan(one["mean"])


def test_a_region_no_arm_learned_is_flagged_not_compared() -> None:
    """The first evidence run's 100 % rows: every 3D arm had TC ≈ 0.01 and predicted no ET at all."""
    from training.pretrain.report import collapsed_cells

    rows = [_row(arm, 40, "same-protocol", 0, 0.84, tc=0.009, et=0.0) for arm in ("scratch", "prism", "swin_ssl")]
    rows += [_row(arm, 4, "same-protocol", 0, 0.85, tc=0.7, et=0.02 if arm == "scratch" else 0.6) for arm in ("scratch", "prism")]
    assert collapsed_cells(rows) == [("TC", 40, "same-protocol", "prism, scratch, swin_ssl"),
                                     ("ET", 40, "same-protocol", "prism, scratch, swin_ssl")]


def _cfg() -> dict[str, Any]:
    return {
        "data": {"labelled_subjects": 24, "test_same_subjects": 4, "test_other_subjects": 3, "unlabelled_subjects": 8,
                 "sequences": ["T1", "FLAIR"], "voxel_mm": 4.0},
        "encoder": {"name": "swin3d"},
        "pretrain": {"objectives": ["prism", "cross_sequence"], "steps": 10},
        "finetune": {"labelled": [5, 2], "steps": 5, "repeats": 3},
        "report": {"command": "mrinode train evaluate --config X.toml"},
    }


def test_report_states_the_target_verdict_from_the_paired_interval(tmp_path: Path) -> None:
    from training.pretrain.report import write_report

    rows = []
    for r, b in enumerate((0.50, 0.70, 0.60)):
        rows += [_row("scratch", 5, t, r, b) for t in ("other-protocol", "same-protocol")]
        rows += [_row("prism", 5, t, r, b + 0.06 + 0.01 * r) for t in ("other-protocol", "same-protocol")]
        rows += [_row("cross_sequence", 5, t, r, b - 0.01) for t in ("other-protocol", "same-protocol")]
    rows += [_row("scratch", 2, "other-protocol", 0, 0.4), _row("prism", 2, "other-protocol", 0, 0.45)]
    probes = [{"probe": "sequence", "arm": a, "mode": m, "test": t, "accuracy": acc, "n_train": 64, "n_test": 24}
              for a, m, acc in (("scratch", "scratch-trained", 0.80), ("prism", "frozen-linear", 0.97),
                                ("cross_sequence", "frozen-linear", 0.90)) for t in ("other-protocol", "same-protocol")]
    report = write_report(rows, probes, _cfg(), tmp_path / "docs", tmp_path / "work")
    text = report.read_text()
    assert "mrinode train evaluate --config X.toml" in text
    assert "| objective | test | 2 labelled | 5 labelled |" in text
    assert "| prism − scratch | other-protocol | +5.0 (1 repeat: no interval) | +7.0 [+4.5, +9.5] |" in text
    assert "**prism**, +7.0 [+4.5, +9.5] Dice WT points over scratch (3 paired repeats)" in text
    assert "Target (≥ +5 points with the interval above 0): **met**" in text
    assert "cross_sequence -1.0" in text
    assert "| prism | 5 | other-protocol | 0.670 ± 0.105 |" in text
    assert "**prism**, 0.970" in text and "Target (≥ 0.95 and better than scratch): **met**" in text
    for png in ("label-efficiency.png", "label-efficiency-paired.png", "probes.png"):
        assert (tmp_path / "docs" / png).stat().st_size > 1000
    # a mean gain of 5 points whose interval includes 0 is not the target
    noisy = [r | {"dice_wt": r["dice_wt"] + (0.2 if r["repeat"] == 0 else -0.04)} if r["arm"] == "prism" else r for r in rows]
    text = write_report(noisy, [], _cfg(), tmp_path / "docs", tmp_path / "work").read_text()
    assert "Target (≥ +5 points with the interval above 0): **not met**" in text
    assert "The probes have not run yet." in text
