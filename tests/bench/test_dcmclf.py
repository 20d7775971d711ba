"""bench.dcmclf: the dcm-classifier benchmark anchor (run out of process in its own venv)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bench.dcmclf import ENV_VAR, classify, classify_detail, to_vocabulary
from dicom_node.sequences import SequenceLabel

VOCABULARY = {m.value for m in SequenceLabel}
PYDICOM_FILES = ["MR_small.dcm", "MR2_UNCR.dcm", "emri_small.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("t1w", "T1"),
        ("t1w+contrast", "T1C"),
        ("t2w+contrast", "T2"),
        ("t2w", "T2"),
        ("flair", "FLAIR"),
        ("PDT2", "PD"),
        ("pd", "PD"),
        ("gret2star", "SWI"),
        ("b0", "DWI"),
        ("dwig", "DWI"),
        ("tracew", "DWI"),
        ("adc", "ADC"),
        ("eadc", "OTHER"),
        ("fa", "OTHER"),
        ("perfusion", "OTHER"),
        ("localizer", "LOCALIZER"),
        ("INVALID", "UNKNOWN"),
        ("MISSING_IMAGE_TYPE", "UNKNOWN"),
        ("LOW_PROBABILITY_t2w", "UNKNOWN"),
        ("LOW_PROBABILITY_t1w+contrast", "UNKNOWN"),
        ("ERROR: FileNotFoundError: gone", "UNKNOWN"),
        ("something new", "UNKNOWN"),
    ],
)
def test_to_vocabulary(raw: str, expected: str) -> None:
    assert to_vocabulary(raw) == expected
    assert to_vocabulary(raw) in VOCABULARY


def _anchor_python() -> Path:
    """dcm-classifier's interpreter from MRINODE_DCMCLF_PYTHON or var/dcmclf-venv; skip otherwise."""
    named = os.environ.get(ENV_VAR)
    python = Path(named) if named else Path("var/dcmclf-venv/bin/python")
    if not python.exists():
        pytest.skip(f"dcm-classifier's venv is absent (set {ENV_VAR}, or run bench.dcmclf.ensure_env)")
    done = subprocess.run([str(python), "-c", "import dcm_classifier"], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"{python} cannot import dcm_classifier")
    return python


def test_classify_real_pydicom_files(tmp_path: Path) -> None:
    python = _anchor_python()
    from pydicom.data import get_testdata_file

    series: dict[str, list[Path]] = {}
    for name in PYDICOM_FILES:
        found = get_testdata_file(name)  # exact names: no wildcard, no download
        assert found, name
        series[name] = [Path(found)]
    series["missing"] = [tmp_path / "absent.dcm"]

    answers = classify(series, python, timeout_s=600)
    assert set(answers) == set(series)
    for raw, prob in answers.values():
        assert to_vocabulary(raw) in VOCABULARY
        assert prob is None or 0.0 <= prob <= 1.0
    # A missing file is an error for that series only, never a crash.
    assert answers["missing"][0].startswith("ERROR")
    # The Siemens VIBE with Omniscan: dcm-classifier 0.9.9 says t1w with contrast.
    assert to_vocabulary(answers["MR-SIEMENS-DICOM-WithOverlays.dcm"][0]) == "T1C"
    # MR_small lacks PixelBandwidth, which dcm-classifier requires: INVALID -> UNKNOWN.
    assert to_vocabulary(answers["MR_small.dcm"][0]) == "UNKNOWN"


def test_classify_detail_reports_missing_fields() -> None:
    python = _anchor_python()
    from pydicom.data import get_testdata_file

    detail = classify_detail({"small": [Path(str(get_testdata_file("MR_small.dcm")))]}, python, timeout_s=600)
    assert detail["small"]["label"] == "INVALID"
    assert detail["small"]["missing_required"] == ["PixelBandwidth"]
    assert detail["small"]["error"] is None


def test_ensure_env_takes_the_named_interpreter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bench.dcmclf import ensure_env

    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.setenv(ENV_VAR, str(python))
    assert ensure_env(tmp_path / "never-made") == python
    assert not (tmp_path / "never-made").exists()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent"))
    with pytest.raises(RuntimeError, match="names no interpreter"):
        ensure_env(tmp_path / "never-made")
