"""Training plots: PNGs drawn from the run's own losses and validation metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.plots import write_training_plots


def _pixels(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return np.asarray(mpimg.imread(path))


def test_plots_follow_the_numbers(tmp_path: Path) -> None:
    falling = [1.0 / (1 + 0.1 * i) for i in range(200)]
    written = write_training_plots(tmp_path / "a", falling, {50: {"dice_WT": 0.2}, 100: {"dice_WT": 0.5}})
    assert [p.name for p in written] == ["loss.png", "validation.png"]
    img = _pixels(tmp_path / "a" / "loss.png")
    assert img.shape[:2] == (350, 600)
    rising = list(reversed(falling))
    write_training_plots(tmp_path / "b", rising)
    assert not (tmp_path / "b" / "validation.png").exists()  # no metrics, no empty plot
    assert not np.array_equal(img, _pixels(tmp_path / "b" / "loss.png"))
    assert write_training_plots(tmp_path / "c", []) == []
