"""Held-out synthetic studies with descriptive headers stripped: fused identification.

Three subjects (Siemens, GE and Philips styles; seeds never used to train the pixel
classifier) are written as DICOM by the synthetic engine. SeriesDescription,
ProtocolName, SequenceName, PulseSequenceName, StudyDescription and every private tag
are removed; what is left is physics (TR/TE/TI/flip, sequence type), ImageType, standard
b-values, the contrast agent, geometry and the pixels.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicom_node.identify import identify_study
from dicom_node.identify.series import default_classifier
from tests.identify.vendor_headers import STRIPPED

pytestmark = pytest.mark.slow

HELD_OUT = ((9101, "siemens"), (9102, "ge"), (9103, "philips"))


#: Header-only results on the studies before stripping: (study, expected, label, confidence).
_UNSTRIPPED: list[tuple[str, str, str, float]] = []


@pytest.fixture(scope="module")
def stripped_studies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    import torch

    from training.synth import SYNTH_SEQUENCES, generate_subject, write_subject

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("synth-held-out")
    studies = []
    for seed, vendor in HELD_OUT:
        subject = generate_subject(seed, sequences=SYNTH_SEQUENCES, voxel_mm=2.0, vendor=vendor)
        folder = write_subject(subject, root, dicom=True, nifti=False) / "dicom"
        expected = _expected_by_uid(folder)
        for row in identify_study(folder, use_pixels=False):
            _UNSTRIPPED.append((vendor, expected[row.series_uid], row.label.value, row.confidence))
        for f in folder.rglob("*.dcm"):
            ds = pydicom.dcmread(f)
            for key in STRIPPED:
                if key in ds:
                    delattr(ds, key)
            ds.remove_private_tags()
            ds.save_as(f)
        studies.append(folder)
    return studies


def _expected(row_files: Path) -> str:
    return row_files.name.split("_", 1)[1]


def _expected_by_uid(study: Path) -> dict[str, str]:
    out = {}
    for folder in study.iterdir():
        first = next(iter(sorted(folder.glob("*.dcm"))))
        out[str(pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID)] = _expected(folder)
    return out


def test_header_accuracy_on_synthetic_vendor_studies(stripped_studies: list[Path]) -> None:
    """Before stripping, the vendor-styled synthetic headers identify every series."""
    assert len(_UNSTRIPPED) == 27
    wrong = [u for u in _UNSTRIPPED if u[1] != u[2]]
    assert (27 - len(wrong)) / 27 >= 0.99, wrong


def test_fused_identification_on_stripped_held_out_studies(stripped_studies: list[Path]) -> None:
    classifier = default_classifier()
    assert classifier is not None, "the shipped sequence-classifier bundle must load"
    outcomes = []
    for study in stripped_studies:
        expected = _expected_by_uid(study)
        rows = identify_study(study, use_pixels=True, classifier=classifier)
        assert len(rows) == len(expected) == 9
        for row in rows:
            assert row.description == "", "SeriesDescription was not stripped"
            ident = row.identification
            took_part = ident.source == "fused" or any(e.startswith("pixel classifier") or "pixel classifier" in e for e in ident.evidence)
            outcomes.append((study.parent.name, expected[row.series_uid], row.label.value, round(row.confidence, 2), took_part))
    n = len(outcomes)
    correct = [o for o in outcomes if o[1] == o[2]]
    wrong = [o for o in outcomes if o[2] not in (o[1], "UNKNOWN")]
    assert n == 27
    assert not wrong, wrong
    assert len(correct) / n >= 0.95, [o for o in outcomes if o[1] != o[2]]
    # the pixel classifier took part wherever it has pixels (not the mixed-plane localizer): fused,
    # or its abstention / disagreement recorded as evidence
    assert all(o[4] for o in outcomes if o[1] != "LOCALIZER")


def test_pixel_classifier_alone_on_held_out_series(stripped_studies: list[Path]) -> None:
    """The classifier's own verdict (no headers) on the series it has classes for."""
    from dicom_node.identify.study import load_pixels, read_headers

    classifier = default_classifier()
    assert classifier is not None
    hits = total = 0
    for study in stripped_studies:
        for folder in study.iterdir():
            expected = _expected(folder)
            family = "T1" if expected == "T1C" else expected
            if family not in classifier.labels:
                continue
            series, _ = read_headers(sorted(folder.iterdir()))
            (items,) = series.values()
            pixels = load_pixels(items)
            assert pixels is not None
            probs = classifier.predict(pixels)
            assert abs(sum(probs.values()) - 1.0) < 1e-4
            total += 1
            hits += max(probs, key=lambda k: probs[k]) == family
    assert total == 24
    assert hits / total >= PIXEL_ONLY_FLOOR, f"pixel-only accuracy {hits}/{total}"


#: Pixel-only accuracy floor on held-out synthetic series. The shipped demonstration model
#: scores 17/24 (0.71) on these seeds; chance is 1/7. Its weak spots (SWI, and T2/PD taken
#: for ADC) are why fusion never lets the pixels overrule a confident header.
PIXEL_ONLY_FLOOR = 0.6
