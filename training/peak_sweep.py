"""Choose a bundle's ``preprocessing.min_component_peak`` on selection subjects: Dice against false tumour.

Each subject is predicted once (:meth:`models.engine.InferenceEngine.predict` with
``keep_probability``); every candidate rule is then applied to the same labels and
probabilities (:func:`models.postprocess.drop_unconfident_components`, exactly the engine's
rule), so the table costs one prediction per subject::

    python -m training.peak_sweep --bundle brain-tumour-demo --sequences FLAIR \\
        --tumour var/evaluate/g13-select/synth/synth-0080* \\
        --tumour-free var/synth/healthy-select-g13/synth-0901{19,25,57,66} --peaks 0 0.8 0.9 0.95 0.97 0.98

Run it on selection subjects only, never on a held-out set.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Case", "main", "predict_case", "sweep"]


@dataclass
class Case:
    """One subject's prediction without the peak rule: what the sweep needs.

    Attributes
    ----------
    name : str
        The subject folder's name.
    truth : numpy.ndarray or None
        Whole-tumour truth (bool) for a subject with a tumour; None for a tumour-free one.
    labels : numpy.ndarray
        Labels before the peak rule.
    probability : numpy.ndarray
        Tumour probability (1 − background), same grid.
    voxel_ml : float
        One voxel's volume in mL.
    """

    name: str
    truth: np.ndarray | None
    labels: np.ndarray
    probability: np.ndarray
    voxel_ml: float


def sweep(cases: Sequence[Case], peaks: Sequence[float], scope: str = "component") -> list[dict[str, object]]:
    """Per rule value: mean and lowest Dice WT over the tumour cases, false tumour (mL) per tumour-free case.

    ``scope`` is the card's ``min_component_peak_scope`` (``"component"`` or ``"study"``).

    Returns
    -------
    list of dict
        ``{"peak", "dice_wt", "dice_wt_min", "false_ml": {name: mL}}`` in the order of ``peaks``.
    """
    from models.postprocess import drop_unconfident_components
    from training.regions import dice

    rows: list[dict[str, object]] = []
    for peak in peaks:
        scores: list[float] = []
        false_ml: dict[str, float] = {}
        for c in cases:
            wt = drop_unconfident_components(c.labels, c.probability, float(peak), scope) > 0
            if c.truth is None:
                false_ml[c.name] = float(wt.sum() * c.voxel_ml)
            else:
                scores.append(float(dice(wt, c.truth)))
        rows.append({"peak": float(peak), "dice_wt": float(np.mean(scores)) if scores else float("nan"),
                     "dice_wt_min": min(scores) if scores else float("nan"), "false_ml": false_ml})
    return rows


def predict_case(engine: object, folder: Path, sequences: Sequence[str], tumour: bool) -> Case:
    """Predict one synthetic subject folder (``<SEQ>.nii.gz``, ``labels.nii.gz``) from ``sequences``."""
    from training.healthy import load_head

    images: dict[str, np.ndarray] = {}
    affine = np.eye(4)
    for seq in sequences:
        images[seq], affine = load_head(folder / f"{seq}.nii.gz")
    pred = engine.predict(images, affine, keep_probability=True)  # type: ignore[attr-defined]
    assert pred.before_peak_rule is not None and pred.foreground_probability is not None
    truth = load_head(folder / "labels.nii.gz")[0] > 0 if tumour else None
    return Case(folder.name, truth, pred.before_peak_rule, pred.foreground_probability,
                float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.peak_sweep``: Dice WT and false tumour for each candidate ``min_component_peak``."""
    ap = argparse.ArgumentParser(prog="python -m training.peak_sweep", description=main.__doc__)
    ap.add_argument("--bundle", required=True, help="bundle name or folder")
    ap.add_argument("--sequences", nargs="+", default=["FLAIR"], help="the input given (default FLAIR alone)")
    ap.add_argument("--tumour", nargs="*", default=[], help="selection subject folders with a tumour")
    ap.add_argument("--tumour-free", nargs="*", default=[], help="tumour-free selection subject folders")
    ap.add_argument("--peaks", nargs="+", type=float, default=[0.0, 0.8, 0.9, 0.95, 0.97, 0.98])
    ap.add_argument("--scope", nargs="+", default=["component", "study"], choices=["component", "study"])
    args = ap.parse_args(argv)
    import torch

    from models.bundle import load_bundle
    from models.engine import InferenceEngine

    torch.set_num_threads(2)
    try:
        engine = InferenceEngine(load_bundle(args.bundle), device="cpu")
        cases = [predict_case(engine, Path(f), args.sequences, True) for f in args.tumour]
        cases += [predict_case(engine, Path(f), args.sequences, False) for f in args.tumour_free]
        rows = {scope: sweep(cases, args.peaks, scope) for scope in args.scope}
    except (ValueError, FileNotFoundError) as exc:
        print(f"training.peak_sweep: {exc}", file=sys.stderr)
        return 2
    names = [c.name for c in cases if c.truth is None]
    print("| scope | min_component_peak | Dice WT (mean, lowest) | false tumour mL: " + " / ".join(names) + " |")
    print("|---|---|---|---|")
    for scope, table in rows.items():
        for r in table:
            ml = r["false_ml"]
            assert isinstance(ml, dict)
            print(f"| {scope} | {r['peak']:.2f} | {r['dice_wt']:.3f}, {r['dice_wt_min']:.3f} | "
                  + " / ".join(f"{ml[n]:.2f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
