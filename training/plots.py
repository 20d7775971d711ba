"""Loss and validation-metric plots of a training run, written beside its TensorBoard logs.

TensorBoard needs a server to be read; a PNG opens anywhere (a ticket, a review of a
retrained model). :func:`write_training_plots` draws the training loss per step (with a
moving average) and every validation metric per step, with matplotlib's file-only Agg
back-end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["write_training_plots"]


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def write_training_plots(out_dir: Path, losses: Sequence[float],
                         validation: Mapping[int, Mapping[str, float]] | None = None) -> list[Path]:
    """Write ``loss.png`` (and ``validation.png`` when there are validation metrics) into ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        The folder (created if missing), e.g. the run's ``plots/`` beside ``tb/``.
    losses : sequence of float
        The training loss of every step (step 1 first).
    validation : mapping, optional
        Step -> {metric name: value}.

    Returns
    -------
    list of Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if losses:
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        steps = list(range(1, len(losses) + 1))
        ax.plot(steps, list(losses), color="#9db4d0", linewidth=0.8, label="loss per step")
        window = max(1, len(losses) // 20)
        if window > 1:
            ax.plot(steps, _moving_average(list(losses), window), color="#1f4e79", linewidth=1.6,
                    label=f"moving average ({window} steps)")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (Dice + CE)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        path = out_dir / "loss.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    if validation:
        names = sorted({k for m in validation.values() for k in m})
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        for name in names:
            pts = sorted((s, m[name]) for s, m in validation.items() if name in m)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("validation metric")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
        fig.tight_layout()
        path = out_dir / "validation.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
