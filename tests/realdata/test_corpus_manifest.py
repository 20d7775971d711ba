"""The real-scan corpus manifest: every case resolves, and a bad manifest is a sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.realdata import FORBIDDEN, CorpusError, load_corpus, missing


def test_every_case_resolves_from_its_package() -> None:
    cases = load_corpus()
    assert len(cases) >= 15
    assert not missing(cases), "run `make setup` (it fetches and installs what the corpus names)"


def test_real_acquisitions_are_kept_apart_from_templates() -> None:
    cases = load_corpus()
    assert all(c.acquisition in {"real", "phantom", "template"} for c in cases)
    for c in cases:
        text = (c.id + c.notes).upper()
        if any(t in text for t in ("MNI152", "COLIN", "CAT12", "ICBM", "AVG152")):
            assert c.acquisition == "template", c.id


def _write(tmp_path: Path, case: dict) -> Path:
    p = tmp_path / "corpus.json"
    p.write_text(json.dumps({"cases": [case]}))
    return p


GOOD = {"id": "x", "source": "pypi:pydicom", "paths": ["data/test_files/MR_small.dcm"], "kind": "series", "label": "T2",
        "vendor": "TOSHIBA", "plane": "axial", "brain": True, "acquisition": "real", "use": "test", "licence": "MIT"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_reserved_packages_are_refused(tmp_path: Path, package: str) -> None:
    source = package + ("@1.0.0" if package.startswith("npm:") else "")
    with pytest.raises(CorpusError, match="reserved for independent checks"):
        load_corpus(_write(tmp_path, {**GOOD, "source": source}))


def test_bad_values_are_named(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="'label' is 'T3'"):
        load_corpus(_write(tmp_path, {**GOOD, "label": "T3"}))
    with pytest.raises(CorpusError, match="lacks the key"):
        load_corpus(_write(tmp_path, {k: v for k, v in GOOD.items() if k != "licence"}))
    assert len(load_corpus(_write(tmp_path, GOOD))) == 1
