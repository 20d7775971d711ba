"""What routing looks at and decides: series and study facts, nodes, rules, decisions.

Pure standard library (runs in Orthanc's embedded interpreter and in the unit tests).
The rules file format and its validation are in :mod:`plugin.rules`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RESULT_MODALITIES", "Decision", "Node", "Rule", "RuleSet", "SeriesInfo", "StudyInfo"]

#: Modalities the node writes (results); with the node's Manufacturer they mark own objects.
RESULT_MODALITIES: frozenset[str] = frozenset({"SEG", "SR", "OT", "PR"})


@dataclass(frozen=True)
class SeriesInfo:
    """What the rules look at in one series.

    Attributes
    ----------
    series_id : str
        Orthanc's identifier of the series.
    modality, body_part, series_description, manufacturer : str
        Main DICOM tags of the series ("" when absent).
    calling_ae : str
        The AE title that sent the series to Orthanc (``RemoteAET`` metadata; "" when
        uploaded over REST).
    instance_ids : tuple of str
        Orthanc's identifiers of the series' instances.
    """

    series_id: str
    modality: str = ""
    body_part: str = ""
    series_description: str = ""
    manufacturer: str = ""
    calling_ae: str = ""
    instance_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyInfo:
    """What the rules look at in one study."""

    study_id: str
    study_uid: str = ""
    study_description: str = ""
    institution: str = ""
    series: tuple[SeriesInfo, ...] = ()


@dataclass(frozen=True)
class Node:
    """A destination mrinode: where its DICOM goes and how to reach its REST API."""

    name: str
    modality: str
    url: str
    token: str = ""
    ae_titles: tuple[str, ...] = ()
    manufacturers: tuple[str, ...] = ()
    timeout_s: float = 10.0

    def public(self) -> dict[str, Any]:
        """A JSON-ready description with the token left out."""
        return {
            "name": self.name,
            "modality": self.modality,
            "url": self.url,
            "token": "***" if self.token else "",
            "ae_titles": list(self.ae_titles),
            "manufacturers": list(self.manufacturers),
        }

    def owns(self, series: SeriesInfo) -> bool:
        """Whether ``series`` is a result this node sent back (never routed again).

        A series is the node's own when it arrived from one of the node's AE titles, or
        when it is a result modality (SEG, SR, ...) carrying the node's Manufacturer.
        """
        ae = series.calling_ae.strip().upper()
        if ae and ae in {a.upper() for a in self.ae_titles}:
            return True
        if series.modality.upper() in RESULT_MODALITIES:
            maker = series.manufacturer.strip().lower()
            return bool(maker) and maker in {m.lower() for m in self.manufacturers}
        return False


@dataclass(frozen=True)
class Rule:
    """One routing rule (see the module docstring for the keys)."""

    name: str
    node: str
    modality: tuple[str, ...] = ()
    body_part: tuple[str, ...] = ()
    series_description: re.Pattern[str] | None = None
    calling_ae: tuple[str, ...] = ()
    study_description: re.Pattern[str] | None = None
    institution: re.Pattern[str] | None = None

    def study_reason(self, study: StudyInfo) -> str | None:
        """Why the study-level criteria fail, or ``None`` when they hold."""
        if self.study_description is not None and not self.study_description.search(study.study_description):
            return f"StudyDescription does not match /{self.study_description.pattern}/"
        if self.institution is not None and not self.institution.search(study.institution):
            return f"InstitutionName does not match /{self.institution.pattern}/"
        return None

    def series_reason(self, series: SeriesInfo) -> str | None:
        """Why a series is not chosen, or ``None`` when it is."""
        if self.modality and series.modality.upper() not in self.modality:
            return f"Modality {series.modality or '(none)'} not in {list(self.modality)}"
        if self.body_part and series.body_part.strip().upper() not in self.body_part:
            return f"BodyPartExamined {series.body_part or '(none)'} not in {list(self.body_part)}"
        if self.series_description is not None and not self.series_description.search(series.series_description):
            return f"SeriesDescription does not match /{self.series_description.pattern}/"
        if self.calling_ae and series.calling_ae.strip().upper() not in self.calling_ae:
            return f"calling AE {series.calling_ae or '(none)'} not in {list(self.calling_ae)}"
        return None

    def public(self) -> dict[str, Any]:
        """A JSON-ready description of the rule."""
        return {
            "name": self.name,
            "node": self.node,
            "modality": list(self.modality),
            "body_part": list(self.body_part),
            "series_description": self.series_description.pattern if self.series_description else None,
            "calling_ae": list(self.calling_ae),
            "study_description": self.study_description.pattern if self.study_description else None,
            "institution": self.institution.pattern if self.institution else None,
        }


@dataclass
class Decision:
    """The outcome of matching one study against the rules.

    Attributes
    ----------
    study_id : str
        Orthanc's study identifier.
    rule, node : str or None
        The matching rule and its node; ``None`` when nothing matched.
    series_ids : list of str
        The series the rule chose.
    own_series_ids : list of str
        Series recognised as results from a node (never routed).
    reasons : list of str
        For each rule that did not match, why (one sentence each).
    """

    study_id: str
    rule: str | None = None
    node: str | None = None
    series_ids: list[str] = field(default_factory=list)
    own_series_ids: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        """Whether a rule matched."""
        return self.rule is not None


@dataclass
class RuleSet:
    """Validated nodes and rules, plus the errors found while reading them.

    A bad rule is left out (and reported in ``errors``); the good ones still route.
    """

    nodes: dict[str, Node] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    source: str = ""

    def own_series(self, study: StudyInfo) -> list[SeriesInfo]:
        """The series of ``study`` that are results from any configured node."""
        return [s for s in study.series if any(n.owns(s) for n in self.nodes.values())]

    def decide(self, study: StudyInfo) -> Decision:
        """Match ``study`` against the rules in order; the first match wins.

        Parameters
        ----------
        study : StudyInfo
            The study as Orthanc holds it.

        Returns
        -------
        Decision
            The chosen rule and series, or the reason each rule did not match.
        """
        own = self.own_series(study)
        own_ids = {s.series_id for s in own}
        candidates = [s for s in study.series if s.series_id not in own_ids]
        decision = Decision(study_id=study.study_id, own_series_ids=sorted(own_ids))
        if not self.rules:
            decision.reasons.append("no routing rule is configured")
        for rule in self.rules:
            why = rule.study_reason(study)
            if why is not None:
                decision.reasons.append(f"rule {rule.name!r}: {why}")
                continue
            chosen = [s for s in candidates if rule.series_reason(s) is None]
            if not chosen:
                detail = "; ".join(sorted({r for s in candidates if (r := rule.series_reason(s))})) or "no series"
                decision.reasons.append(f"rule {rule.name!r}: no series chosen ({detail})")
                continue
            decision.rule = rule.name
            decision.node = rule.node
            decision.series_ids = [s.series_id for s in chosen]
            break
        return decision

    def public(self) -> dict[str, Any]:
        """A JSON-ready description (tokens hidden)."""
        return {
            "source": self.source,
            "nodes": {name: n.public() for name, n in self.nodes.items()},
            "rules": [r.public() for r in self.rules],
            "errors": list(self.errors),
        }
