"""Fusion of the header identification with the pixel classifier's probabilities.

The header result becomes a distribution over labels: the candidate gets its confidence,
the rest is spread evenly (no header evidence = a flat distribution). The pixel
classifier's probabilities cover the labels it was trained on; for the others (OTHER,
LOCALIZER) it abstains with a flat value. The product, normalised, is the fused belief:
agreement raises the confidence, disagreement lowers it, and below the threshold the
answer is ``UNKNOWN``. The pixel classifier sees no contrast agent, so it speaks for the
T1 family only; T1 against T1C is decided by the header's contrast evidence.

The classifier is an aid, not a veto. On a series unlike its training data (its
out-of-distribution score above its threshold) it abstains and the header answer stands.
It may lower the header's confidence only when it is in distribution *and* its bundle
says it was calibrated on real acquisitions (``may_lower``); otherwise its disagreement is
recorded as evidence and changes nothing, and its agreement may still raise the confidence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from dicom_node.identify.evidence import DEFAULT_THRESHOLD, Cue, Identification
from dicom_node.identify.header import contrast_decision
from dicom_node.sequences import SequenceLabel

__all__ = ["FUSED_LABELS", "PixelClassifier", "fuse"]

L = SequenceLabel

#: Labels the fused belief ranges over (T1C is folded into T1 and split afterwards).
FUSED_LABELS: tuple[SequenceLabel, ...] = (L.T1, L.T2, L.FLAIR, L.PD, L.DWI, L.ADC, L.SWI, L.LOCALIZER, L.OTHER)


class PixelClassifier(Protocol):
    """What fusion needs from a pixel classifier (``models.seqclf.SequenceClassifier``)."""

    @property
    def labels(self) -> tuple[str, ...]:
        """The label values it predicts (``"T1"`` meaning the T1 family)."""
        ...

    def predict(self, volume: np.ndarray) -> dict[str, float]:
        """Return calibrated probabilities per label for a (slices, rows, cols) volume."""
        ...


def _family(label: SequenceLabel | None) -> SequenceLabel | None:
    return L.T1 if label is L.T1C else label


def _header_distribution(header: Identification) -> dict[SequenceLabel, float]:
    k = len(FUSED_LABELS)
    candidate = _family(header.candidate)
    c = header.confidence if candidate in FUSED_LABELS else 0.0
    dist = {label: (1.0 - c) / k for label in FUSED_LABELS}
    if candidate in FUSED_LABELS and candidate is not None:
        dist[candidate] += c
    return dist


def _pixel_distribution(probs: Mapping[str, float]) -> dict[SequenceLabel, float]:
    known = {L(k): float(v) for k, v in probs.items() if k in L.__members__}
    known = {_family(k) or k: v for k, v in known.items()}
    flat = 1.0 / max(len(known), 1)
    return {label: known.get(label, flat) for label in FUSED_LABELS}


def fuse(
    header: Identification,
    pixel_probs: Mapping[str, float] | None,
    contrast: Sequence[Cue] = (),
    *,
    threshold: float = DEFAULT_THRESHOLD,
    study_records_contrast: bool = False,
    ood: tuple[float, float] | None = None,
    may_lower: bool = True,
) -> Identification:
    """Fuse a header identification with pixel probabilities.

    Parameters
    ----------
    header : Identification
        The header result (its candidate and confidence are used, even if ``UNKNOWN``).
    pixel_probs : mapping of str to float, or None
        The pixel classifier's calibrated probabilities; ``None`` returns ``header``.
    contrast : sequence of Cue
        The header's contrast cues, to split the T1 family into T1 and T1C.
    threshold : float
        Below this fused confidence the answer is ``UNKNOWN``.
    study_records_contrast : bool
        Whether the study records a contrast agent on another series.
    ood : (float, float), optional
        The series' out-of-distribution score and the classifier's threshold; above the
        threshold the classifier abstains and ``header`` is returned with a note.
    may_lower : bool
        Whether the classifier may lower the header's confidence or overrule a header
        answer above the threshold (only a classifier calibrated on real acquisitions).

    Returns
    -------
    Identification
        Source ``"fused"``, with the header's evidence and the pixel verdict.
    """
    if pixel_probs is None:
        return header
    if ood is not None and not ood[0] <= ood[1]:
        note = (f"pixel classifier abstains: the image is unlike its training data "
                f"(out-of-distribution score {ood[0]:.2f} above {ood[1]:.2f})")
        return replace(header, evidence=[*header.evidence, note])
    h = _header_distribution(header)
    q = _pixel_distribution(pixel_probs)
    joint = {label: h[label] * q[label] for label in FUSED_LABELS}
    total = sum(joint.values()) or 1.0
    fused = {label: v / total for label, v in joint.items()}
    top = max(fused, key=lambda k: fused[k])
    confidence = fused[top]
    pixel_top = max(pixel_probs, key=lambda k: pixel_probs[k])
    header_family = _family(header.candidate)
    verdict = "agrees" if L(pixel_top) is header_family else "disagrees"
    pixel_line = f"pixel classifier: {pixel_top} at {pixel_probs[pixel_top]:.2f} ({verdict} with the header)"
    header_lines = [e for e in header.evidence if not e.startswith("best candidate ")]
    evidence = [*header_lines[:1], pixel_line, *header_lines[1:]]
    if _family(L(pixel_top)) is not top:
        # the image speaks for another label: it may lower the header's belief, never raise it
        header_support = header.confidence if header_family is top else 0.0
        confidence = min(confidence, header_support)
    elif header_family is not top and header_family in FUSED_LABELS:
        # the image overrules the header's candidate: only as far as the header was unsure
        confidence = min(confidence, 1.0 - header.confidence)
    label = top
    if top is L.T1:
        label, factor, notes = contrast_decision(contrast, study_records_contrast=study_records_contrast)
        confidence *= factor
        evidence += [n for n in notes if n not in evidence]
    header_known = header.label is not L.UNKNOWN
    if not may_lower and header_known and (_family(label) is not header_family or confidence < header.confidence):
        # not calibrated on real images: its disagreement is evidence, not a vote
        note = f"{pixel_line}: not calibrated on real acquisitions, so it does not lower the header's answer"
        return replace(header, evidence=[*header.evidence, note])
    scores = {k.value: v for k, v in fused.items()}
    if label is not L.T1 and L.T1.value in scores and label is L.T1C:
        scores[L.T1C.value] = scores.pop(L.T1.value)
    confidence = float(np.clip(confidence, 0.0, 1.0))
    if confidence < threshold:
        evidence.insert(0, f"best fused candidate {label.value} at {confidence:.2f} is below the threshold {threshold:.2f}")
        return Identification(L.UNKNOWN, confidence, evidence, "fused", label, scores)
    return Identification(label, confidence, evidence, "fused", label, scores)
