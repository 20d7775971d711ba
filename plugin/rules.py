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
from pathlib import Path
from typing import Any

from .matching import RESULT_MODALITIES, Decision, Node, Rule, RuleSet, SeriesInfo, StudyInfo

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
