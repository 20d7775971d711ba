"""Identify one series: header rules, optional pixel classifier, fusion."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from pydicom.dataset import Dataset

from dicom_node.identify.evidence import DEFAULT_THRESHOLD, Identification
from dicom_node.identify.facts import extract_facts
from dicom_node.identify.fusion import PixelClassifier, fuse
from dicom_node.identify.header import collect_cues, decide
from dicom_node.sequences import SequenceLabel

__all__ = ["DEFAULT_CLASSIFIER", "default_classifier", "identify_series"]

log = logging.getLogger(__name__)

#: Name of the shipped pixel classifier bundle.
DEFAULT_CLASSIFIER = "sequence-classifier"


@lru_cache(maxsize=1)
def default_classifier() -> PixelClassifier | None:
    """Load the shipped pixel classifier once per process (torch is imported here).

    Returns
    -------
    PixelClassifier or None
        The classifier, or ``None`` (logged) when torch or the bundle is unavailable.
    """
    try:
        from models.seqclf import load_sequence_classifier
    except ImportError as exc:
        log.warning("pixel classifier unavailable (%s); headers only.", exc)
        return None
    try:
        return load_sequence_classifier(DEFAULT_CLASSIFIER)
    except (OSError, ValueError) as exc:
        log.warning("pixel classifier bundle %r could not be loaded: %s; headers only.", DEFAULT_CLASSIFIER, exc)
        return None


def identify_series(
    headers: Sequence[Dataset],
    pixels: np.ndarray | None = None,
    *,
    classifier: PixelClassifier | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    study_records_contrast: bool = False,
) -> Identification:
    """Identify the MRI sequence of one series.

    Parameters
    ----------
    headers : sequence of pydicom.Dataset
        The series' instances (pixel data not needed).
    pixels : numpy.ndarray, optional
        A (slices, rows, cols) array of the series' pixels; with it, the pixel classifier
        runs and its result is fused with the header rules.
    classifier : PixelClassifier, optional
        The pixel classifier; the shipped bundle is loaded when ``pixels`` is given
        without one.
    threshold : float
        Below this confidence the label is ``UNKNOWN``.
    study_records_contrast : bool
        Whether another series of the same study records a contrast agent; then a T1
        series without one is confidently pre-contrast (otherwise its confidence is
        lowered: T1 and T1C cannot be told apart).

    Returns
    -------
    Identification
        Source ``"header"`` without pixels, ``"fused"`` with them.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold!r} must lie in [0, 1].")
    if not headers:
        return Identification(SequenceLabel.UNKNOWN, 0.0, ["the series has no instances"], "header")
    facts = extract_facts(headers)
    if facts.modality != "MR":
        modality = facts.modality or "missing"
        return Identification(SequenceLabel.UNKNOWN, 0.0, [f"Modality is {modality}, not MR"], "header")
    cues, contrast = collect_cues(facts)
    header = decide(cues, contrast, threshold=threshold, study_records_contrast=study_records_contrast)
    if pixels is None:
        return header
    if classifier is None:
        classifier = default_classifier()
    if classifier is None:
        header.evidence.append("pixel classifier unavailable: header only")
        return header
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3 or min(pixels.shape[1:]) < 8:
        header.evidence.append(f"pixels of shape {pixels.shape} are not a (slices, rows, cols) image: header only")
        return header
    probs = classifier.predict(pixels)
    score_fn = getattr(classifier, "ood_score", None)
    score = score_fn(pixels) if callable(score_fn) else None
    limit = getattr(classifier, "ood_threshold", None)
    ood = (float(score), float(limit)) if score is not None and limit is not None else None
    if ood is None:
        header.evidence.append("pixel classifier has no out-of-distribution check: advisory only")
    may_lower = ood is not None and bool(getattr(classifier, "calibrated_on_real", False))
    return fuse(
        header, probs, contrast, threshold=threshold, study_records_contrast=study_records_contrast,
        ood=ood, may_lower=may_lower,
    )
