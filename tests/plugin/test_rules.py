"""Routing rules: validation messages and matching, without Orthanc."""

from __future__ import annotations

import json
from pathlib import Path

from plugin.rules import RuleSet, SeriesInfo, StudyInfo, load_rules, parse_rules

GOOD = {
    "nodes": {
        "mrinode": {
            "modality": "mrinode",
            "url": "http://127.0.0.1:8000/",
            "token": "t",
            "ae_titles": ["mrinode"],
            "manufacturers": ["mrinode"],
        }
    },
    "rules": [
        {
            "name": "brain-mr",
            "node": "mrinode",
            "modality": ["MR"],
            "body_part": ["BRAIN", "HEAD", ""],
            "study_description": "(?i)brain|head",
            "calling_ae": ["SCANNER1"],
        }
    ],
}


def _series(sid: str, **kw: str) -> SeriesInfo:
    base = {"modality": "MR", "body_part": "BRAIN", "calling_ae": "SCANNER1"}
    base.update(kw)
    return SeriesInfo(series_id=sid, instance_ids=(sid + "-i1", sid + "-i2"), **base)


def _study(*series: SeriesInfo, desc: str = "MR BRAIN W/WO") -> StudyInfo:
    return StudyInfo(study_id="s1", study_uid="1.2.3", study_description=desc, series=series)


def _rules() -> RuleSet:
    rules = parse_rules(json.loads(json.dumps(GOOD)))
    assert rules.errors == []
    return rules


def test_first_matching_rule_chooses_only_matching_series() -> None:
    rules = _rules()
    study = _study(_series("a"), _series("b", modality="CT"), _series("c", body_part=""), _series("d", body_part="KNEE"))
    decision = rules.decide(study)
    assert decision.rule == "brain-mr" and decision.node == "mrinode"
    assert decision.series_ids == ["a", "c"]
    assert rules.nodes["mrinode"].url == "http://127.0.0.1:8000"


def test_non_matching_study_says_why_per_rule() -> None:
    rules = _rules()
    ct = rules.decide(_study(_series("a", modality="CT")))
    assert not ct.matched
    assert ct.reasons == ["rule 'brain-mr': no series chosen (Modality CT not in ['MR'])"]
    knee = rules.decide(_study(_series("a"), desc="MR KNEE"))
    assert not knee.matched and "StudyDescription does not match" in knee.reasons[0]
    other_ae = rules.decide(_study(_series("a", calling_ae="OTHERSCANNER")))
    assert not other_ae.matched and "calling AE OTHERSCANNER not in ['SCANNER1']" in other_ae.reasons[0]
    assert parse_rules({"nodes": {}, "rules": []}).decide(_study(_series("a"))).reasons == [
        "no routing rule is configured"
    ]


def test_results_from_the_node_are_never_candidates() -> None:
    rules = _rules()
    own_by_ae = _series("seg", modality="SEG", calling_ae="MRINODE")
    own_by_maker = _series("sr", modality="SR", manufacturer="MRINode", calling_ae="")
    foreign_sr = _series("sr2", modality="SR", manufacturer="Other AI", calling_ae="SCANNER1")
    decision = rules.decide(_study(own_by_ae, own_by_maker, foreign_sr))
    assert decision.own_series_ids == ["seg", "sr"]
    assert not decision.matched  # the foreign SR is not MR, so nothing is left to send
    # An MR series carrying the node's Manufacturer but sent by the scanner is still routed.
    mr = rules.decide(_study(_series("a", manufacturer="mrinode")))
    assert mr.series_ids == ["a"] and mr.own_series_ids == []


def test_validation_names_the_rule_and_key_and_keeps_good_rules() -> None:
    data = json.loads(json.dumps(GOOD))
    data["rules"] += [
        {"name": "typo", "node": "mrinode", "modallity": "MR"},
        {"name": "bad-node", "node": "mrinod"},
        {"name": "bad-regex", "node": "mrinode", "series_description": "(unclosed"},
        {"name": "bad-type", "node": "mrinode", "modality": 3},
        {"name": "brain-mr", "node": "mrinode"},
        {"name": "off", "node": "mrinode", "enabled": False},
    ]
    data["nodes"]["broken"] = {"modality": "x", "url": "ftp://x"}
    data["extra"] = 1
    rules = parse_rules(data, source="rules.toml")
    assert [r.name for r in rules.rules] == ["brain-mr"]
    assert sorted(rules.nodes) == ["mrinode"]
    text = "\n".join(rules.errors)
    assert "rule 'typo': unknown key 'modallity'. Did you mean 'modality'?" in text
    assert "rule 'bad-node': 'node' 'mrinod' is not a node defined under [nodes] (known: mrinode). Did you mean 'mrinode'?" in text
    assert "rule 'bad-regex': 'series_description' is not a valid regular expression" in text
    assert "rule 'bad-type': 'modality' must be a string or a list of strings" in text
    assert "rule 'brain-mr' is defined twice" in text
    assert "node 'broken': 'url' must start with http:// or https://" in text
    assert "unknown top-level key 'extra'" in text
    assert len(rules.errors) == 7
    assert all(e.startswith("rules.toml: ") for e in rules.errors)


def test_load_rules_toml_json_and_broken_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    toml = tmp_path / "rules.toml"
    toml.write_text(
        '[nodes.n]\nmodality = "n"\nurl = "http://127.0.0.1:1"\ntoken_file = "token"\n'
        '[[rules]]\nname = "r"\nnode = "n"\nmodality = "MR"\n'
    )
    rules = load_rules(toml)
    assert rules.errors == [] and rules.nodes["n"].token == "from-file"
    assert rules.public()["nodes"]["n"]["token"] == "***"
    js = tmp_path / "rules.json"
    js.write_text(json.dumps(GOOD))
    assert [r.name for r in load_rules(js).rules] == ["brain-mr"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rules]\nname=")
    broken = load_rules(bad)
    assert broken.rules == [] and "is not valid TOML" in broken.errors[0] and str(bad) in broken.errors[0]
    missing = load_rules(tmp_path / "nope.toml")
    assert "cannot be read" in missing.errors[0]
    no_token = tmp_path / "nt.toml"
    no_token.write_text('[nodes.n]\nmodality = "n"\nurl = "http://h"\ntoken_file = "absent"\n')
    assert "token_file" in load_rules(no_token).errors[0]


def test_shipped_rule_files_are_valid(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    demo = load_rules(root / "deploy" / "demo" / "rules.toml")
    assert demo.errors == [] and [r.name for r in demo.rules] == ["brain-mr"]
    # The example reads its token from /etc/mrinode/api-token; point it at a test file.
    (tmp_path / "api-token").write_text("t0ken\n")
    text = (root / "deploy" / "routing-rules.example.toml").read_text()
    assert 'token_file = "/etc/mrinode/api-token"' in text
    example_path = tmp_path / "rules.toml"
    example_path.write_text(text.replace("/etc/mrinode/api-token", "api-token"))
    example = load_rules(example_path)
    assert example.errors == [], example.errors
    assert [r.name for r in example.rules] == ["brain-mr"]  # the second rule is switched off
    assert example.nodes["mrinode"].token == "t0ken"
