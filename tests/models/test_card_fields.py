"""Card fields the pipelines read: labels (codes, colours, tracking ids, regions), sequences, algorithm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.bundle import BundleError, Card, load_bundle, read_card

DEMO = Path(__file__).resolve().parents[2] / "models" / "bundles" / "brain-tumour-demo"


def _card(**changes: Any) -> dict[str, Any]:
    d: dict[str, Any] = json.loads((DEMO / "card.json").read_text())
    d.update(changes)
    return d


def test_the_demo_card_is_the_brats_table_and_names_its_algorithm() -> None:
    from dicom_node.io.codes import BRATS_SEGMENTS, algorithm_from_card, segments_from_card

    bundle = load_bundle("brain-tumour-demo")  # weights' SHA-256 still matches the card
    assert segments_from_card(bundle.card) == list(BRATS_SEGMENTS)
    algorithm = algorithm_from_card(bundle.card)
    assert (algorithm.name, algorithm.version, algorithm.source) == ("brain-tumour-demo", "0.5.3", "mrinode")
    assert algorithm.version == bundle.card.version  # the SEG's algorithm version is the card's
    assert algorithm.family.value == "123110"


def test_algorithm_defaults_to_the_card_identity() -> None:
    card = Card.from_dict(_card(algorithm={}))
    assert card.algorithm_fields() == {"name": card.name, "version": card.version, "family": None, "source": None,
                                       "parameters": {}}


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"labels": [{"value": 1, "name": "x", "category": ["1", "SCT"], "type": ["2", "SCT", "y"], "colour": [1, 2, 3]}]},
          "labels[0]: key 'category'"),
        ({"labels": [{"value": 1, "name": "x", "category": ["1", "SCT", "c"], "type": ["2", "SCT", "y"], "colour": [1, 2, 300]}]},
         "labels[0]: key 'colour'"),
        ({"labels": [{"value": 0, "name": "x", "category": ["1", "SCT", "c"], "type": ["2", "SCT", "y"], "colour": [1, 2, 3]}]},
         "describes value 0"),
        ({"labels": [{"name": "x"}]}, "labels[0] lacks the key(s) value"),
        ({"required_sequences": ["DWI"]}, "key 'required_sequences' names DWI"),
        ({"optional_sequences": ["FLAR"]}, "key 'optional_sequences' names FLAR"),
        ({"algorithm": {"family": "AI"}}, "key 'algorithm.family'"),
        ({"algorithm": {"parameters": ["a"]}}, "key 'algorithm.parameters'"),
    ],
)
def test_a_malformed_card_is_refused_naming_the_file_and_key(tmp_path, changes: dict[str, Any], key: str) -> None:
    (tmp_path / "card.json").write_text(json.dumps(_card(**changes)))
    with pytest.raises(BundleError) as info:
        read_card(tmp_path)
    assert str(tmp_path / "card.json") in str(info.value) and key in str(info.value), str(info.value)
