"""The result types of sequence identification: a label, a confidence and the evidence."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dicom_node.sequences import SequenceLabel

__all__ = [
    "DEFAULT_THRESHOLD",
    "Cue",
    "Identification",
    "SeriesIdentification",
    "Source",
]

#: Confidence below which an identification becomes ``UNKNOWN``.
DEFAULT_THRESHOLD: float = 0.6

Source = Literal["header", "pixels", "fused"]


@dataclass(frozen=True)
class Cue:
    """One piece of evidence for a label.

    Attributes
    ----------
    label : SequenceLabel
        The label the cue speaks for.
    weight : float
        How strongly, in ``(0, 1)``: the probability that the cue alone is right.
    text : str
        A short sentence for people, e.g. ``"ImageType has ADC"``.
    family : str
        Where it came from: ``"image_type"``, ``"keyword"``, ``"sequence_name"``,
        ``"physics"``, ``"b_value"``, ``"geometry"``, ``"contrast"`` or ``"pixels"``.
    dominant : bool
        A dominant cue explains away the non-dominant cues of other labels (a localizer
        is a gradient echo, so its T1-like physics must not compete with it).
    """

    label: SequenceLabel
    weight: float
    text: str
    family: str
    dominant: bool = False


@dataclass
class Identification:
    """The identified sequence of one series.

    Attributes
    ----------
    label : SequenceLabel
        The label, ``UNKNOWN`` when the confidence is below the threshold.
    confidence : float
        In ``[0, 1]``; for ``UNKNOWN`` the confidence of the best candidate.
    evidence : list of str
        The cues that led to it, strongest first.
    source : {"header", "pixels", "fused"}
        Which path produced it.
    candidate : SequenceLabel or None
        The best label before the threshold was applied (equals ``label`` unless it
        fell below the threshold).
    scores : dict
        Per-label support in ``[0, 1]`` (label value → score), for fusion and reports.
    """

    label: SequenceLabel
    confidence: float
    evidence: list[str] = field(default_factory=list)
    source: Source = "header"
    candidate: SequenceLabel | None = None
    scores: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence!r} must lie in [0, 1].")
        if self.candidate is None:
            self.candidate = self.label

    @property
    def is_known(self) -> bool:
        """Whether the label is a real answer (not ``UNKNOWN``)."""
        return self.label is not SequenceLabel.UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        out = asdict(self)
        out["label"] = self.label.value
        out["candidate"] = self.candidate.value if self.candidate is not None else None
        out["confidence"] = round(self.confidence, 4)
        out["scores"] = {k: round(v, 4) for k, v in self.scores.items()}
        return out


@dataclass
class SeriesIdentification:
    """The identification of one series of a study (one row of ``mrinode identify``).

    Attributes
    ----------
    series_uid : str
        The Series Instance UID (empty when unreadable).
    series_number : int or None
        The Series Number.
    description : str
        The Series Description (may be empty).
    modality : str
        The Modality (``"MR"`` for the series this module identifies).
    identification : Identification
        The result; ``UNKNOWN`` with the reason for non-MR or broken series.
    error : str or None
        A sentence saying why the series could not be identified, or ``None``.
    n_instances : int
        How many files belong to the series.
    """

    series_uid: str
    series_number: int | None
    description: str
    modality: str
    identification: Identification
    error: str | None = None
    n_instances: int = 0

    @property
    def label(self) -> SequenceLabel:
        """The identified label (shortcut for ``identification.label``)."""
        return self.identification.label

    @property
    def confidence(self) -> float:
        """The confidence (shortcut for ``identification.confidence``)."""
        return self.identification.confidence

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {
            "series_uid": self.series_uid,
            "series_number": self.series_number,
            "description": self.description,
            "modality": self.modality,
            "n_instances": self.n_instances,
            "error": self.error,
            **self.identification.to_dict(),
        }
