"""The out-of-distribution reference of a bundle: training-data intensity quantiles and a threshold chosen on data.

The engine (:meth:`models.engine.InferenceEngine.ood`) compares each present channel's
normalised head intensities with the training data's, quantile by quantile
(:func:`models.preprocess.ood_score`: the largest mean absolute difference in SD over the
channels). This module measures the reference on training subjects, scores selection inputs
(synthetic subjects never trained on and the real heads of the training split), chooses the
threshold and writes both into the card's ``preprocessing.ood``::

    python -m training.ood --bundle models/bundles/brain-tumour-demo \\
        --reference var/synth/train-s3 --selection var/synth/healthy-select var/evaluate/sel/synth

The threshold is ``margin`` times the largest score among the in-distribution selection
inputs (each sequence alone), so every one of them stays below it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["choose_threshold", "main", "reference_quantiles", "score_folders", "write_ood"]


def _synth_folders(dirs: Sequence[str | Path], limit: int | None = None) -> list[Path]:
    out: list[Path] = []
    for d in dirs:
        out += sorted(p for p in Path(d).iterdir() if p.is_dir() and (p / "T1.nii.gz").is_file())
    return out[:limit] if limit else out


def _prepared(engine: Any, folder: Path, channels: Sequence[str]) -> Any:
    from training.healthy import load_head

    images: dict[str, np.ndarray] = {}
    affine = None
    for c in channels:
        f = folder / f"{c}.nii.gz"
        if f.is_file():
            images[c], affine = load_head(f)
    assert affine is not None
    x, _, _ = engine.prepare(images, affine)
    return x


def reference_quantiles(engine: Any, dirs: Sequence[str | Path], limit: int | None = 30) -> dict[str, list[float]]:
    """Median over training subjects of each channel's normalised head-intensity quantiles.

    Parameters
    ----------
    engine : models.engine.InferenceEngine
        The bundle's engine (its ``prepare`` is the normalisation the reference must match).
    dirs : sequence of path
        Synthetic subject folders (``synth-*`` with ``T1.nii.gz`` ...).
    limit : int, optional
        At most this many subjects.

    Raises
    ------
    ValueError
        If no subject is found.
    """
    from models.preprocess import foreground_quantiles

    folders = _synth_folders(dirs, limit)
    if not folders:
        raise ValueError(f"no synthetic subjects under {', '.join(str(d) for d in dirs)} for the OOD reference.")
    per: dict[int, list[np.ndarray]] = {}
    for f in folders:
        x = _prepared(engine, f, engine.channels).numpy()
        present = [bool(np.any(x[c])) for c in range(x.shape[0])]
        for c, q in foreground_quantiles(x, present).items():
            per.setdefault(c, []).append(q)
    return {engine.channels[c]: [round(float(v), 4) for v in np.median(np.stack(qs), axis=0)] for c, qs in per.items()}


def score_folders(engine: Any, heads: dict[str, dict[str, str]]) -> dict[str, dict[str, float | None]]:
    """The engine's OOD score per head and single sequence (``{head: {sequence: score}}``)."""
    from training.healthy import load_head

    out: dict[str, dict[str, float | None]] = {}
    for hid, seqs in heads.items():
        for seq, path in seqs.items():
            if seq not in engine.channels:
                continue
            data, affine = load_head(path)
            x, _, _ = engine.prepare({seq: data}, affine)
            out.setdefault(hid, {})[seq] = engine.ood(x)[0]
    return out


def choose_threshold(in_distribution: Sequence[float], margin: float = 1.25, step: float = 0.05) -> float:
    """``margin`` × the largest in-distribution score, rounded up to ``step``.

    Raises
    ------
    ValueError
        If there are no scores.
    """
    vals = [float(v) for v in in_distribution if v is not None]
    if not vals:
        raise ValueError("choosing an OOD threshold needs at least one in-distribution score.")
    return float(np.ceil(max(vals) * margin / step) * step)


def write_ood(bundle_dir: str | Path, reference: dict[str, list[float]], threshold: float, note: str) -> Path:
    """Write ``preprocessing.ood`` (levels, reference, threshold, note) into a bundle's card (weights untouched)."""
    from models.preprocess import OOD_QUANTILES

    card_path = Path(bundle_dir) / "card.json"
    card = json.loads(card_path.read_text())
    card.setdefault("preprocessing", {})["ood"] = {
        "levels": list(OOD_QUANTILES), "reference": reference, "threshold": round(float(threshold), 4), "note": note,
    }
    tmp = card_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(card_path)
    return card_path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.ood``: measure the reference, score selection inputs, write the card's OOD block."""
    ap = argparse.ArgumentParser(prog="python -m training.ood", description=main.__doc__)
    ap.add_argument("--bundle", required=True, help="bundle folder")
    ap.add_argument("--reference", nargs="+", required=True, help="training subject folders (synthetic)")
    ap.add_argument("--reference-limit", type=int, default=30)
    ap.add_argument("--selection", nargs="+", default=[], help="in-distribution selection subject folders")
    ap.add_argument("--margin", type=float, default=1.25)
    ap.add_argument("--dry-run", action="store_true", help="print, do not write the card")
    args = ap.parse_args(argv)
    import torch

    from models.bundle import load_bundle
    from models.engine import InferenceEngine
    from training.healthy import real_head_paths

    torch.set_num_threads(2)
    engine = InferenceEngine(load_bundle(Path(args.bundle)), device="cpu")
    try:
        ref = reference_quantiles(engine, args.reference, args.reference_limit)
        # score with the new reference in place (the card in memory only)
        engine.bundle.card.preprocessing["ood"] = {"reference": ref, "threshold": None}
        sel = {f.name: {c: str(f / f"{c}.nii.gz") for c in engine.channels} for f in _synth_folders(args.selection)}
        sel_scores = score_folders(engine, sel)
        threshold = choose_threshold([v for s in sel_scores.values() for v in s.values() if v is not None], args.margin)
        real = score_folders(engine, real_head_paths("train"))
    except (ValueError, FileNotFoundError) as exc:
        print(f"training.ood: {exc}", file=sys.stderr)
        return 2
    in_max = max(v for s in sel_scores.values() for v in s.values() if v is not None)
    print(f"in-distribution selection ({len(sel_scores)} subjects x sequences): max {in_max:.3f}; threshold {threshold:.2f}")
    for hid, s in real.items():
        print(f"real (training split) {hid}: {s}")
    note = (f"threshold = {args.margin:g} x the largest score of {len(sel_scores)} synthetic selection subjects "
            f"(each sequence alone, max {in_max:.3f}); reference: median quantiles of {args.reference_limit} "
            f"training subjects")
    if not args.dry_run:
        print(f"card: {write_ood(args.bundle, ref, threshold, note)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
