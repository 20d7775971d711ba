"""Fusion of header and pixel opinions: agreement raises confidence, disagreement lowers it."""

from __future__ import annotations

from dicom_node.identify import DEFAULT_THRESHOLD, Cue, Identification
from dicom_node.identify.fusion import fuse
from dicom_node.sequences import SequenceLabel as L

PIXEL_LABELS = ("T1", "T2", "FLAIR", "PD", "DWI", "ADC", "SWI")


def _probs(top: str, p: float) -> dict[str, float]:
    rest = (1.0 - p) / (len(PIXEL_LABELS) - 1)
    return {k: (p if k == top else rest) for k in PIXEL_LABELS}


def _header(label: L, conf: float) -> Identification:
    return Identification(label, conf, [f"header says {label.value}"], "header", label)


def test_agreement_raises_confidence() -> None:
    header = _header(L.T2, 0.7)
    fused = fuse(header, _probs("T2", 0.9))
    assert fused.label is L.T2 and fused.source == "fused"
    assert fused.confidence > header.confidence


def test_disagreement_lowers_confidence_to_unknown() -> None:
    header = _header(L.T2, 0.8)
    fused = fuse(header, _probs("FLAIR", 0.9))
    assert fused.confidence < header.confidence
    assert fused.label is L.UNKNOWN
    assert any("disagrees" in e for e in fused.evidence)


def test_pixels_alone_decide_only_when_confident() -> None:
    empty = Identification(L.UNKNOWN, 0.0, ["no identifying header evidence"], "header", L.UNKNOWN)
    sure = fuse(empty, _probs("FLAIR", 0.97))
    unsure = fuse(empty, _probs("FLAIR", 0.4))
    assert sure.label is L.FLAIR and sure.confidence >= DEFAULT_THRESHOLD
    assert unsure.label is L.UNKNOWN


def test_pixel_classifier_abstains_on_labels_it_does_not_know() -> None:
    header = _header(L.LOCALIZER, 0.9)
    fused = fuse(header, _probs("T1", 0.9))
    assert fused.label is L.LOCALIZER and fused.confidence >= 0.85


def test_t1_family_split_by_header_contrast_evidence() -> None:
    header = _header(L.T1C, 0.9)
    post = [Cue(L.T1C, 0.9, "ContrastBolusAgent is recorded", "contrast")]
    fused = fuse(header, _probs("T1", 0.9), post)
    assert fused.label is L.T1C and fused.confidence > 0.9
    pre = fuse(_header(L.T1, 0.9), _probs("T1", 0.9), [], study_records_contrast=True)
    assert pre.label is L.T1
    unsure = fuse(_header(L.T1, 0.9), _probs("T1", 0.9), [], study_records_contrast=False)
    assert unsure.confidence < pre.confidence


def test_no_pixels_returns_header_unchanged() -> None:
    header = _header(L.SWI, 0.8)
    assert fuse(header, None) is header


def test_pixels_cannot_overrule_a_confident_header() -> None:
    header = _header(L.T2, 0.78)
    fused = fuse(header, _probs("ADC", 0.99))
    assert fused.label is L.UNKNOWN
    weak = fuse(_header(L.T2, 0.2), _probs("ADC", 0.99))
    assert weak.label is L.ADC and weak.confidence <= 0.8


def test_out_of_distribution_image_abstains() -> None:
    header = _header(L.PD, 0.96)
    fused = fuse(header, _probs("T1", 0.97), ood=(3.1, 1.03))
    assert fused.label is L.PD and fused.confidence == header.confidence
    assert any("abstains" in e and "3.10 above 1.03" in e for e in fused.evidence)
    # the same opinion in distribution would have vetoed the header's answer
    assert fuse(header, _probs("T1", 0.97), ood=(0.5, 1.03)).label is L.UNKNOWN


def test_classifier_not_calibrated_on_real_images_cannot_lower() -> None:
    header = _header(L.T1C, 0.95)
    post = [Cue(L.T1C, 0.9, "ContrastBolusAgent is recorded", "contrast")]
    kept = fuse(header, _probs("ADC", 0.98), post, ood=(0.5, 1.03), may_lower=False)
    assert kept.label is L.T1C and kept.confidence == header.confidence
    assert any("does not lower" in e for e in kept.evidence)
    # agreement may still raise it
    raised = fuse(_header(L.T2, 0.7), _probs("T2", 0.9), ood=(0.5, 1.03), may_lower=False)
    assert raised.label is L.T2 and raised.confidence > 0.7
