"""Header identification on the labelled corpus: real package files and vendor-styled series."""

from __future__ import annotations

import pytest

from dicom_node.identify import DEFAULT_THRESHOLD, identify_series
from tests.identify.corpus_loader import load_entries, read_entry
from tests.identify.vendor_headers import build_corpus, strip_descriptive


def test_real_headers_accuracy_and_no_confident_mistake() -> None:
    entries = load_entries()
    results = []
    for entry in entries:
        ds = read_entry(entry)
        if ds is None:
            continue
        results.append((entry, identify_series([ds])))
    assert len(results) >= 20, "too few corpus files resolved; is pydicom-data / nibabel installed?"
    wrong = [(e.id, e.expected, r.label.value, round(r.confidence, 2)) for e, r in results if r.label.value != e.expected]
    accuracy = 1 - len(wrong) / len(results)
    assert accuracy >= 0.99, wrong
    assert not [w for w in wrong if w[2] != "UNKNOWN" and w[3] >= DEFAULT_THRESHOLD], "a wrong label above the threshold"


def test_vendor_styled_corpus_accuracy() -> None:
    corpus = build_corpus()
    assert len(corpus) > 300
    labels = {s.expected for s in corpus}
    assert labels == {"T1", "T1C", "T2", "FLAIR", "PD", "DWI", "ADC", "SWI", "LOCALIZER", "OTHER"}
    wrong = []
    for s in corpus:
        r = identify_series(s.headers)
        if r.label.value != s.expected:
            wrong.append((s.vendor, s.description, s.expected, r.label.value, round(r.confidence, 2)))
    assert 1 - len(wrong) / len(corpus) >= 0.99, wrong[:10]
    assert not [w for w in wrong if w[3] != "UNKNOWN"], "a wrong label above the threshold"


def test_stripped_headers_are_never_confidently_wrong() -> None:
    corpus = build_corpus()
    correct = unknown = 0
    wrong = []
    for s in corpus:
        r = identify_series([strip_descriptive(d) for d in s.headers])
        if r.label.value == s.expected:
            correct += 1
        elif r.label.value == "UNKNOWN":
            unknown += 1
        else:
            wrong.append((s.vendor, s.description, s.expected, r.label.value, round(r.confidence, 2)))
    assert not wrong
    # physics, ImageType, b-values and the contrast agent still identify many series
    assert correct / len(corpus) > 0.5


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("t2_tirm_tra_dark-fluid", "FLAIR"),
        ("Sag T1 FLAIR", "T1"),
        ("T2* tra", "SWI"),
        ("t2_fl2d_tra_hemo", "SWI"),
        ("ep2d_diff_3scan_trace_p2_ADC", "ADC"),
        ("ep2d_diff_3scan_trace_p2_TRACEW", "DWI"),
        ("eADC", "OTHER"),
        ("Kakusan", "DWI"),
        ("Difusão axial", "DWI"),
        ("Densité protonique", "PD"),
        ("T2 gewichtet", "T2"),
        ("Übersicht", "LOCALIZER"),
        ("T1 mit KM", "T1C"),
        ("T1 sin contraste", "T1"),
        ("T1 con contraste", "T1C"),
        ("T1WI zouei", "T1C"),
        ("VEN_BOLD", "SWI"),
        ("ep2d_bold_rest", "OTHER"),
    ],
)
def test_description_vocabulary(description: str, expected: str) -> None:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Modality = "MR"
    ds.SeriesDescription = description
    r = identify_series([ds], study_records_contrast=True)
    assert r.candidate is not None and r.candidate.value == expected, r.evidence


def test_contrast_conflict_lowers_confidence() -> None:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Modality = "MR"
    ds.SeriesDescription = "T1 pre"
    ds.ScanningSequence = "SE"
    ds.RepetitionTime = 500
    ds.EchoTime = 10
    clean = identify_series([ds])
    ds.ContrastBolusAgent = "Gadovist"
    conflicted = identify_series([ds])
    assert clean.label.value == "T1"
    assert conflicted.label.value == "UNKNOWN"
    assert conflicted.confidence < clean.confidence


def test_non_mr_and_empty_series_are_unknown() -> None:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Modality = "CT"
    ds.SeriesDescription = "T1 FLAIR"
    r = identify_series([ds])
    assert r.label.value == "UNKNOWN" and "not MR" in r.evidence[0]
    assert identify_series([]).label.value == "UNKNOWN"


def test_header_path_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, dicom_node.identify, dicom_node.cli.identify; print('torch' in sys.modules, 'highdicom' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False False"


def test_b_value_from_siemens_csa_header_when_the_private_tag_is_missing() -> None:
    from tests.identify.corpus_loader import CorpusEntry

    ds = read_entry(CorpusEntry("nibabel", "nicom/tests/data/siemens_dwi_1000.dcm.gz", "DWI", ""))
    if ds is None:
        pytest.skip("nibabel's Siemens DWI test file is not installed")
    del ds[0x0019100C]
    for key in ("SeriesDescription", "ProtocolName", "SequenceName"):
        delattr(ds, key)
    r = identify_series([ds])
    assert r.label.value == "DWI"
    assert any("b-values 1000" in e for e in r.evidence), r.evidence


def test_private_b_value_is_read_only_under_its_creator() -> None:
    from pydicom.dataset import Dataset

    from dicom_node.identify.facts import extract_facts

    ds = Dataset()
    ds.Modality = "MR"
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.private_block(0x0043, "SOME OTHER CREATOR", create=True).add_new(0x39, "IS", [1000, 0, 0, 0])
    assert extract_facts([ds]).b_values == set()
    ds2 = Dataset()
    ds2.Modality = "MR"
    ds2.Manufacturer = "GE MEDICAL SYSTEMS"
    ds2.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS", [1_000_001_000, 8, 0, 0])
    assert extract_facts([ds2]).b_values == {1000.0}
