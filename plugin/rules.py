"""Routing rules: which studies the Orthanc plugin sends to which mrinode node.

The PACS administrator writes the rules in a TOML (or JSON) file::

    [nodes.mrinode]
    modality = "mrinode"            # the node's entry in Orthanc's DicomModalities
    url = "http://127.0.0.1:8000"   # the node's REST API
    token = "change-me"             # bearer token (or token_file = "/etc/mrinode/token")
    ae_titles = ["MRINODE"]         # results from these calling AEs never route again
    manufacturers = ["mrinode"]     # SEG/SR with this Manufacturer never route again

    [[rules]]
    name = "brain-mr"
    node = "mrinode"
    modality = ["MR"]
    body_part = ["BRAIN", "HEAD", ""]   # "" admits a missing BodyPartExamined
    study_description = "(?i)brain|head|neuro"

Series-level criteria (``modality``, ``body_part``, ``series_description``,
``calling_ae``) choose the series a rule sends; study-level criteria
(``study_description``, ``institution``) must hold for the study. A rule matches when the
study passes and at least one series is chosen. Rules are tried in file order; the first
match wins. A criterion that is left out matches everything.

This module is pure standard library (it runs inside Orthanc's embedded interpreter and
in the unit tests alike).
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RESULT_MODALITIES",
    "Decision",
    "Node",
    "Rule",
    "RuleSet",
    "SeriesInfo",
    "StudyInfo",
    "load_rules",
    "parse_rules",
]

#: Modalities the node writes (results); with the node's Manufacturer they mark own objects.
RESULT_MODALITIES: frozenset[str] = frozenset({"SEG", "SR", "OT", "PR"})

_NODE_KEYS = ("modality", "url", "token", "token_file", "ae_titles", "manufacturers", "timeout_s")
_RULE_KEYS = (
    "name",
    "node",
    "modality",
    "body_part",
    "series_description",
    "calling_ae",
    "study_description",
    "institution",
    "enabled",
)


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


def _did_you_mean(key: str, options: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _str_list(where: str, key: str, value: Any, *, upper: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: {key!r} must be a string or a list of strings, not {value!r}.")
    return tuple(v.strip().upper() if upper else v.strip() for v in value)


def _regex(where: str, key: str, value: Any) -> re.Pattern[str] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key!r} must be a regular expression string, not {value!r}.")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"{where}: {key!r} is not a valid regular expression ({exc}).") from None


def _parse_node(name: str, raw: Any, base_dir: Path | None) -> Node:
    where = f"node {name!r}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a table of keys, not {raw!r}.")
    for key in raw:
        if key not in _NODE_KEYS:
            raise ValueError(f"{where}: unknown key {key!r}.{_did_you_mean(key, _NODE_KEYS)}")
    for key in ("modality", "url"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ValueError(f"{where}: {key!r} is required and must be a non-empty string.")
    url = str(raw["url"]).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{where}: 'url' must start with http:// or https://, not {url!r}.")
    token = raw.get("token", "")
    if "token_file" in raw:
        path = Path(str(raw["token_file"]))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"{where}: token_file {str(path)!r} cannot be read ({exc.strerror}).") from None
    if not isinstance(token, str):
        raise ValueError(f"{where}: 'token' must be a string.")
    timeout = raw.get("timeout_s", 10.0)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"{where}: 'timeout_s' must be a positive number, not {timeout!r}.")
    return Node(
        name=name,
        modality=str(raw["modality"]).strip(),
        url=url,
        token=token,
        ae_titles=_str_list(where, "ae_titles", raw.get("ae_titles", []), upper=True),
        manufacturers=_str_list(where, "manufacturers", raw.get("manufacturers", []), upper=False),
        timeout_s=float(timeout),
    )


def _parse_rule(index: int, raw: Any, nodes: dict[str, Node]) -> Rule | None:
    if not isinstance(raw, dict):
        raise ValueError(f"rule #{index}: must be a table of keys, not {raw!r}.")
    name = raw.get("name", f"#{index}")
    where = f"rule {name!r}"
    if not isinstance(name, str) or not name:
        raise ValueError(f"rule #{index}: 'name' must be a non-empty string.")
    for key in raw:
        if key not in _RULE_KEYS:
            raise ValueError(f"{where}: unknown key {key!r}.{_did_you_mean(key, _RULE_KEYS)}")
    node = raw.get("node")
    if not isinstance(node, str) or node not in nodes:
        known = ", ".join(sorted(nodes)) or "(none)"
        hint = _did_you_mean(node, sorted(nodes)) if isinstance(node, str) else ""
        raise ValueError(f"{where}: 'node' {node!r} is not a node defined under [nodes] (known: {known}).{hint}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError(f"{where}: 'enabled' must be true or false.")
    if not enabled:
        return None
    return Rule(
        name=name,
        node=node,
        modality=_str_list(where, "modality", raw.get("modality", []), upper=True),
        body_part=_str_list(where, "body_part", raw.get("body_part", []), upper=True),
        series_description=_regex(where, "series_description", raw.get("series_description")),
        calling_ae=_str_list(where, "calling_ae", raw.get("calling_ae", []), upper=True),
        study_description=_regex(where, "study_description", raw.get("study_description")),
        institution=_regex(where, "institution", raw.get("institution")),
    )


def parse_rules(data: Any, *, source: str = "<rules>", base_dir: Path | None = None) -> RuleSet:
    """Validate decoded rules data (the TOML/JSON document as a dict).

    Parameters
    ----------
    data : dict
        With a ``nodes`` table and a ``rules`` array.
    source : str
        Where the data came from, for messages.
    base_dir : Path, optional
        Folder that relative ``token_file`` paths are read from.

    Returns
    -------
    RuleSet
        The valid nodes and rules; each problem is one sentence in ``errors`` and the
        faulty node or rule is left out.
    """
    result = RuleSet(source=source)
    if not isinstance(data, dict):
        result.errors.append(f"{source}: the rules file must hold a table with 'nodes' and 'rules'.")
        return result
    for key in data:
        if key not in ("nodes", "rules"):
            result.errors.append(f"{source}: unknown top-level key {key!r}.{_did_you_mean(key, ('nodes', 'rules'))}")
    raw_nodes = data.get("nodes", {})
    if not isinstance(raw_nodes, dict):
        result.errors.append(f"{source}: 'nodes' must be a table of named nodes.")
        raw_nodes = {}
    for name, raw in raw_nodes.items():
        try:
            result.nodes[name] = _parse_node(name, raw, base_dir)
        except ValueError as exc:
            result.errors.append(f"{source}: {exc}")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        result.errors.append(f"{source}: 'rules' must be an array of tables ([[rules]]).")
        raw_rules = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules, start=1):
        try:
            rule = _parse_rule(index, raw, result.nodes)
        except ValueError as exc:
            result.errors.append(f"{source}: {exc}")
            continue
        if rule is None:
            continue
        if rule.name in seen:
            result.errors.append(f"{source}: rule {rule.name!r} is defined twice; the second one is ignored.")
            continue
        seen.add(rule.name)
        result.rules.append(rule)
    return result


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules file (``.toml`` or ``.json``).

    Parameters
    ----------
    path : str or Path
        The rules file.

    Returns
    -------
    RuleSet
        Never raises for bad content: an unreadable or malformed file gives a rule set
        with no rules and one error sentence naming the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return RuleSet(source=str(path), errors=[f"routing rules file {str(path)!r} cannot be read ({exc.strerror})."])
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        return RuleSet(source=str(path), errors=[f"routing rules file {str(path)!r} is not valid {kind}: {exc}."])
    return parse_rules(data, source=str(path), base_dir=path.parent)
