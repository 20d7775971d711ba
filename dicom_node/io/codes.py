"""Coded segment and algorithm descriptions for the result objects (SEG, SR).

Segment property codes are SNOMED CT (DICOM CID 7150/7151 style): the BraTS tumour
sub-regions are *Morphologically Altered Structure* (SCT 49755003) with types Necrosis
(6574001), Edema (79654002) and Neoplasm (108369006, labelled "Enhancing tumour", as the
DICOM context groups have no "enhancing" type); the brain is an *Anatomical Structure*
(91723000) of type Brain (12738006). Colours are sRGB values that highdicom converts to
CIELab for RecommendedDisplayCIELabValue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.sr.coding import Code

__all__ = [
    "BRAIN",
    "BRATS_SEGMENTS",
    "CATEGORY_ANATOMICAL_STRUCTURE",
    "CATEGORY_MORPHOLOGICALLY_ALTERED",
    "ENHANCING_TUMOUR",
    "NECROTIC_CORE",
    "OEDEMA",
    "PRIVATE_SCHEME",
    "SR_ANALYSIS_STATUS",
    "SR_COMPLETED",
    "SR_IDENTIFICATION_CONFIDENCE",
    "SR_IDENTIFIED_SEQUENCE",
    "SR_MISSING_SEQUENCE",
    "SR_NOT_PERFORMED",
    "AlgorithmSpec",
    "SegmentSpec",
    "algorithm_from_card",
    "segments_from_card",
    "sequence_code",
]

CATEGORY_MORPHOLOGICALLY_ALTERED = Code("49755003", "SCT", "Morphologically Altered Structure")
CATEGORY_ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
AI_FAMILY = Code("123110", "DCM", "Artificial Intelligence")


@dataclass(frozen=True)
class SegmentSpec:
    """One label value of a label map and how a viewer should present it.

    Attributes
    ----------
    label_value : int
        The value in the label volume (> 0).
    label : str
        SegmentLabel, e.g. ``"Necrotic core"``.
    category : pydicom.sr.coding.Code
        SegmentedPropertyCategoryCodeSequence (SNOMED CT).
    type : pydicom.sr.coding.Code
        SegmentedPropertyTypeCodeSequence (SNOMED CT).
    rgb : tuple of int
        Display colour in sRGB 0-255 (stored as CIELab).
    tracking_id : str
        A human-readable tracking identifier (the SR reuses it).
    anatomic_region : pydicom.sr.coding.Code or None
        AnatomicRegionSequence (defaults to the brain).
    """

    label_value: int
    label: str
    category: Code
    type: Code
    rgb: tuple[int, int, int]
    tracking_id: str = ""
    anatomic_region: Code | None = field(default_factory=lambda: Code("12738006", "SCT", "Brain"))

    def __post_init__(self) -> None:
        if int(self.label_value) <= 0:
            raise ValueError(
                f"Segment {self.label!r}: label_value must be a positive integer, got {self.label_value}."
            )
        if any(not 0 <= c <= 255 for c in self.rgb):
            raise ValueError(f"Segment {self.label!r}: rgb values must lie in 0..255, got {self.rgb}.")


@dataclass(frozen=True)
class AlgorithmSpec:
    """The algorithm that made a result (AlgorithmIdentificationSequence, SR device).

    Attributes
    ----------
    name : str
        AlgorithmName, e.g. the model bundle name.
    version : str
        AlgorithmVersion, e.g. the bundle version.
    family : pydicom.sr.coding.Code
        AlgorithmFamilyCodeSequence (default DCM "Artificial Intelligence").
    source : str or None
        AlgorithmSource (e.g. an institution or repository).
    parameters : dict of str to str
        AlgorithmParameters.
    """

    name: str
    version: str
    family: Code = AI_FAMILY
    source: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.strip() or not self.version.strip():
            raise ValueError("AlgorithmSpec needs a non-empty name and version.")


NECROTIC_CORE = SegmentSpec(
    1,
    "Necrotic core",
    CATEGORY_MORPHOLOGICALLY_ALTERED,
    Code("6574001", "SCT", "Necrosis"),
    (220, 40, 40),
    "NCR",
)
OEDEMA = SegmentSpec(
    2, "Oedema", CATEGORY_MORPHOLOGICALLY_ALTERED, Code("79654002", "SCT", "Edema"), (60, 200, 80), "ED"
)
ENHANCING_TUMOUR = SegmentSpec(
    3,
    "Enhancing tumour",
    CATEGORY_MORPHOLOGICALLY_ALTERED,
    Code("108369006", "SCT", "Neoplasm"),
    (250, 210, 30),
    "ET",
)
BRAIN = SegmentSpec(
    1,
    "Brain",
    CATEGORY_ANATOMICAL_STRUCTURE,
    Code("12738006", "SCT", "Brain"),
    (120, 160, 220),
    "BRAIN",
    None,
)

#: The BraTS tumour sub-regions with label values 1, 2, 3 (BraTS 2021+ uses 4 for
#: enhancing tumour in its files; remap with :func:`dataclasses.replace` if needed). This is
#: the content of the demo bundle's card (``training.export`` writes it into cards) and a
#: fixture for the writers' tests; no pipeline reads it: pipelines describe their segments
#: from their model's card (:func:`segments_from_card`).
BRATS_SEGMENTS: tuple[SegmentSpec, ...] = (NECROTIC_CORE, OEDEMA, ENHANCING_TUMOUR)


class _CardLike(Protocol):
    """What :func:`segments_from_card` and :func:`algorithm_from_card` read of a model card."""

    name: str
    version: str
    #: :class:`models.bundle.LabelInfo` items: value, name, category, type, colour,
    #: tracking_id, anatomic_region.
    labels: list[Any]

    def algorithm_fields(self) -> dict[str, Any]: ...


def _code(triple: Sequence[str]) -> Code:
    return Code(str(triple[0]), str(triple[1]), str(triple[2]))


def segments_from_card(card: _CardLike) -> list[SegmentSpec]:
    """The card's labels as segments, in the card's order (segment ``n`` is ``card.labels[n - 1]``).

    Parameters
    ----------
    card : models.bundle.Card
        Its labels' value, name, SNOMED CT category and type, colour, ``tracking_id`` and
        ``anatomic_region`` (None: no anatomic region).

    Returns
    -------
    list of SegmentSpec
    """
    out = []
    for lab in card.labels:
        region = getattr(lab, "anatomic_region", None)
        out.append(SegmentSpec(
            label_value=int(lab.value),
            label=str(lab.name),
            category=_code(lab.category),
            type=_code(lab.type),
            rgb=(int(lab.colour[0]), int(lab.colour[1]), int(lab.colour[2])),
            tracking_id=str(getattr(lab, "tracking_id", "") or ""),
            anatomic_region=_code(region) if region else None,
        ))
    return out


def algorithm_from_card(card: _CardLike) -> AlgorithmSpec:
    """The card's algorithm identification (name, version, family, source, parameters).

    Parameters
    ----------
    card : models.bundle.Card
        See :meth:`models.bundle.Card.algorithm_fields`.

    Returns
    -------
    AlgorithmSpec
    """
    a = card.algorithm_fields()
    family = _code(a["family"]) if a.get("family") else AI_FAMILY
    return AlgorithmSpec(name=a["name"], version=a["version"], family=family, source=a.get("source"),
                         parameters=dict(a.get("parameters") or {}))


#: The private coding scheme for concepts DICOM has no code for (declared in every SR).
PRIVATE_SCHEME = "99MRINODE"

SR_IDENTIFIED_SEQUENCE = Code("SEQ-ID", PRIVATE_SCHEME, "Identified MR sequence")
SR_IDENTIFICATION_CONFIDENCE = Code("SEQ-CONF", PRIVATE_SCHEME, "Sequence identification confidence")
SR_ANALYSIS_STATUS = Code("ANALYSIS-STATUS", PRIVATE_SCHEME, "Analysis status")
SR_NOT_PERFORMED = Code("NOT-PERFORMED", PRIVATE_SCHEME, "Not performed: required sequences missing")
SR_COMPLETED = Code("COMPLETED", PRIVATE_SCHEME, "Completed: segmentation produced")
SR_MISSING_SEQUENCE = Code("SEQ-MISSING", PRIVATE_SCHEME, "Missing required sequence")

#: Standard DICOM codes (CID 7180 / 6311) where one exists; private codes otherwise.
_SEQUENCE_CODES: dict[str, Code] = {
    "T1": Code("110804", "DCM", "T1 Weighted MR Signal Intensity"),
    "T2": Code("110805", "DCM", "T2 Weighted MR Signal Intensity"),
    "PD": Code("110803", "DCM", "Proton Density Weighted MR Signal Intensity"),
    "SWI": Code("110806", "DCM", "T2* Weighted MR Signal Intensity"),
    "DWI": Code("113043", "DCM", "Diffusion weighted"),
    "ADC": Code("113041", "DCM", "Apparent Diffusion Coefficient"),
    "LOCALIZER": Code("121311", "DCM", "Localizer"),
    "T1C": Code("T1C", PRIVATE_SCHEME, "T1 weighted post-contrast"),
    "FLAIR": Code("FLAIR", PRIVATE_SCHEME, "Fluid attenuated T2 weighted (FLAIR)"),
    "OTHER": Code("OTHER", PRIVATE_SCHEME, "Other MR sequence"),
    "UNKNOWN": Code("UNKNOWN", PRIVATE_SCHEME, "Unknown MR sequence (not confident)"),
}


def sequence_code(label: str) -> Code:
    """The coded concept for a sequence label of :class:`dicom_node.sequences.SequenceLabel`.

    Parameters
    ----------
    label : str
        ``"T1"``, ``"T1C"``, ``"FLAIR"`` ... (a ``SequenceLabel`` is a ``str``).

    Returns
    -------
    pydicom.sr.coding.Code

    Raises
    ------
    ValueError
        If ``label`` is not a sequence label.
    """
    key = str(label).strip().upper()
    if key not in _SEQUENCE_CODES:
        raise ValueError(f"{label!r} is not a sequence label; expected one of {', '.join(_SEQUENCE_CODES)}.")
    return _SEQUENCE_CODES[key]
