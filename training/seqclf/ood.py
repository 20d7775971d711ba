"""Fit the pixel classifier's out-of-distribution score and write it into its bundle.

``python -m training.seqclf.ood --cache DIR --bundle models/bundles/sequence-classifier
--train-seeds 1000 1016 --val-seeds 1024 1030 [--threshold T]``

Series embeddings (the mean pooled encoder features of pseudo-series of 6 slices, as the
classifier sees a series) of the training subjects give class means and a shared, shrunk
covariance (:class:`models.seqclf.FeatureDensity`). The validation subjects' scores say
what "in distribution" looks like; with ``--choose-on-real`` the threshold is then set on
real acquisitions: the real-scan corpus cases marked ``tune`` (never the ``test`` ones)
whose series the classifier gets wrong must all lie above it, so the classifier abstains on
each of them; it is the lower of the synthetic validation's 99th percentile and 0.9 times the
smallest score of such a real series. Or give it with ``--threshold``. The statistics go to ``ood.safetensors`` beside the
weights and the card's ``preprocessing.ood`` block records the file's sha256, the
threshold and how it was chosen.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.seqclf.data import load_slices

__all__ = ["fit_density", "main", "series_embeddings", "write_ood"]

log = logging.getLogger(__name__)


@torch.no_grad()
def series_embeddings(clf: Any, x: np.ndarray, y: np.ndarray, group: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed pseudo-series of ``group`` consecutive slices of one class.

    Parameters
    ----------
    clf : models.seqclf.SequenceClassifier
        The loaded classifier.
    x, y : numpy.ndarray
        Stored slices (n, S, S) and their class indices.
    group : int
        Slices per pseudo-series.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Embeddings (m, dim) and classes (m,).
    """
    embs, labels = [], []
    i = 0
    while i < len(y):
        j = i
        while j < len(y) and j - i < group and y[j] == y[i]:
            j += 1
        embs.append(clf.embedding(x[i:j].astype(np.float32)))
        labels.append(int(y[i]))
        i = j
    return torch.stack(embs), torch.tensor(labels)


def fit_density(clf: Any, cache: Path, train_seeds: Sequence[int], val_seeds: Sequence[int]) -> tuple[Any, list[float]]:
    """Fit the density on training subjects and score the validation subjects.

    Returns
    -------
    (models.seqclf.FeatureDensity, list of float)
        The density (threshold unset) and the validation series' scores.
    """
    from models.seqclf import FeatureDensity

    x, y = load_slices(cache, train_seeds)
    emb, lab = series_embeddings(clf, x, y)
    density = FeatureDensity.fit(emb, lab)
    xv, yv = load_slices(cache, val_seeds)
    ev, _ = series_embeddings(clf, xv, yv)
    return density, [density.score(e) for e in ev]


def real_scores(clf: Any) -> list[tuple[str, float, bool]]:
    """Score the tuning cases of the real-scan corpus: (case id, OOD score, classifier right?)."""
    import tempfile

    from dicom_node.identify.study import load_pixels
    from training.realdata import load_corpus
    from training.realdata.judge import case_headers
    from training.realdata.stage import stage

    family = {"T1C": "T1"}
    out: list[tuple[str, float, bool]] = []
    for case in load_corpus():
        if case.kind != "series" or case.use != "tune" or case.acquisition != "real":
            continue
        with tempfile.TemporaryDirectory() as tmp:
            items = case_headers(stage(case, tmp))
            pixels = load_pixels(items) if items else None
            if pixels is None or pixels.ndim != 3 or min(pixels.shape[1:]) < 8:
                continue
            probs = clf.predict(pixels)
            top = max(probs, key=lambda k: probs[k])
            out.append((case.id, float(clf.density.score(clf.embedding(pixels))), top == family.get(case.label, case.label)))
    return out


def write_ood(bundle_dir: Path, density: Any, threshold: float, chosen: str, extra: dict[str, Any]) -> None:
    """Save the statistics and record them in the card (weights untouched).

    Parameters
    ----------
    bundle_dir : Path
        The classifier bundle.
    density : models.seqclf.FeatureDensity
        The fitted statistics.
    threshold : float
        Scores above it are out of distribution.
    chosen : str
        How the threshold was chosen, in words.
    extra : dict
        More facts for the card's ``ood`` block (validation percentiles, seeds).
    """
    from safetensors.torch import save_file

    from models.bundle import sha256_file
    from models.seqclf import OOD_FILE

    path = bundle_dir / OOD_FILE
    save_file(density.tensors(), str(path))
    card_path = bundle_dir / "card.json"
    card = json.loads(card_path.read_text())
    card["preprocessing"]["ood"] = {
        "file": OOD_FILE,
        "sha256": sha256_file(path),
        "threshold": round(float(threshold), 4),
        "score": "smallest squared Mahalanobis distance of the series embedding to a class mean / feature dimension",
        "threshold_chosen_on": chosen,
        **extra,
    }
    card["preprocessing"].setdefault("calibrated_on_real", False)
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: fit the statistics and write them into the bundle."""
    p = argparse.ArgumentParser(description="Fit the sequence classifier's out-of-distribution score.")
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--train-seeds", type=int, nargs=2, default=(1000, 1016))
    p.add_argument("--val-seeds", type=int, nargs=2, default=(1024, 1030))
    p.add_argument("--choose-on-real", action="store_true", help="set the threshold on the real corpus' tuning cases")
    p.add_argument("--threshold", type=float, default=None,
                   help="default: the 99th percentile of the synthetic validation scores (provisional)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(2)
    from models.seqclf import load_sequence_classifier

    clf = load_sequence_classifier(args.bundle)
    density, val = fit_density(clf, args.cache, range(*args.train_seeds), range(*args.val_seeds))
    pct = {f"p{q}": round(float(np.percentile(val, q)), 3) for q in (50, 90, 99, 100)}
    threshold = args.threshold if args.threshold is not None else float(np.percentile(val, 99))
    chosen = "given on the command line" if args.threshold is not None else "99th percentile of synthetic validation"
    extra: dict[str, Any] = {"train_subject_seeds": list(args.train_seeds), "validation_subject_seeds": list(args.val_seeds),
                             "validation_series": len(val), "validation_scores": pct}
    if args.choose_on_real:
        clf.density = density
        scored = real_scores(clf)
        wrong = [s for _, s, right in scored if not right]
        if wrong:
            threshold = min(threshold, 0.9 * min(wrong))
        chosen = ("on real acquisitions: below every real tuning series the classifier gets wrong "
                  "(min of synthetic p99 and 0.9 x their smallest score)")
        extra["real_tuning_series"] = {cid: {"score": round(sc, 3), "classifier_right": right} for cid, sc, right in scored}
    write_ood(args.bundle, density, threshold, chosen, extra)
    log.info("validation scores %s; threshold %.3f", pct, threshold)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
