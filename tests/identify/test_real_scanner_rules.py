"""Header rules for the families real scanners write (issue 14): each case is a header as a scanner writes it.

The headers are typed from the vendors' conventions (Siemens MEMPRAGE/MP2RAGE/SPACE-FLAIR/tir2d,
GE BRAVO/CUBE FLAIR/FSE, Philips 3D TFE); the real files behind these rules are in the real-scan
corpus (tests/realdata).
"""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicom_node.identify import DEFAULT_THRESHOLD, identify_series


def _ds(vendor: str, **kw: object) -> Dataset:
    ds = Dataset()
    ds.Modality = "MR"
    ds.Manufacturer = vendor
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


MEMPRAGE = dict(ScanningSequence=["GR", "IR"], SequenceVariant=["SP", "MP"], MRAcquisitionType="3D", RepetitionTime=2530,
                EchoTime=1.66, FlipAngle=7, ImageType=["DERIVED", "PRIMARY", "M", "NORM", "MEAN"])


def test_memprage_without_inversion_time_is_t1() -> None:
    r = identify_series([_ds("SIEMENS", SequenceName="tfl3d4_ns", SeriesDescription="mocoMEMPRAGE_220FOV RMS", **MEMPRAGE)],
                        study_records_contrast=True)
    assert r.label.value == "T1" and r.confidence >= DEFAULT_THRESHOLD, r.evidence


@pytest.mark.parametrize("records", [False, True])
def test_stripped_memprage_is_t1_or_unknown_never_another_label(records: bool) -> None:
    r = identify_series([_ds("SIEMENS", **MEMPRAGE)], study_records_contrast=records)
    assert r.label.value == ("T1" if records else "UNKNOWN"), r.evidence
    assert (r.scores or {}).get("T1", 0) > 0.5 or r.candidate.value == "T1"


@pytest.mark.parametrize(
    ("vendor", "kw"),
    [
        ("GE MEDICAL SYSTEMS", dict(ScanningSequence="GR", SequenceVariant=["SS", "SK"], ScanOptions=["FAST_GEMS", "EDR_GEMS", "IR_GEMS"],
                                    MRAcquisitionType="3D", RepetitionTime=8.2, EchoTime=3.2, InversionTime=450, FlipAngle=12)),
        ("Philips Medical Systems", dict(ScanningSequence="GR", SequenceVariant=["SP", "MP"], MRAcquisitionType="3D",
                                         RepetitionTime=8.1, EchoTime=3.7, FlipAngle=8)),
        ("SIEMENS", dict(ScanningSequence=["GR", "IR"], SequenceVariant=["SP", "MP"], MRAcquisitionType="3D", RepetitionTime=5000,
                         EchoTime=2.9, InversionTime=700, FlipAngle=4)),
    ],
    ids=["ge-bravo", "philips-3d-tfe-no-ti", "siemens-mp2rage"],
)
def test_prepared_3d_gradient_echo_is_t1_with_stripped_names(vendor: str, kw: dict) -> None:
    r = identify_series([_ds(vendor, **kw)], study_records_contrast=True)
    assert r.label.value == "T1", r.evidence


def test_ge_flair_without_names_or_ti_is_never_confidently_t2() -> None:
    """The filed case: a GE FLAIR with names stripped became T2 above the threshold."""
    r = identify_series([_ds("GE MEDICAL SYSTEMS", ScanningSequence="SE", SequenceVariant=["SK", "OSP"],
                             ScanOptions=["FAST_GEMS", "FILTERED_GEMS"], MRAcquisitionType="2D", RepetitionTime=9000,
                             EchoTime=140, FlipAngle=90)])
    assert r.label.value in ("FLAIR", "UNKNOWN"), r.evidence


def test_ge_t2flair_scan_option_says_flair() -> None:
    r = identify_series([_ds("GE MEDICAL SYSTEMS", ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "OSP"],
                             ScanOptions=["FAST_GEMS", "IR_GEMS", "T2FLAIR_GEMS"], MRAcquisitionType="2D",
                             RepetitionTime=9000, EchoTime=140, FlipAngle=90)])
    assert r.label.value == "FLAIR" and r.confidence >= DEFAULT_THRESHOLD, r.evidence


@pytest.mark.parametrize(("ti", "tr", "te", "label"), [(2500, 9000, 101, "FLAIR"), (900, 2000, 8, "T1"), (150, 5000, 40, "OTHER")])
def test_siemens_tir_is_decided_by_ti(ti: float, tr: float, te: float, label: str) -> None:
    r = identify_series([_ds("SIEMENS", SequenceName="*tir2d1_19", ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "SP", "MP"],
                             ScanOptions="IR", MRAcquisitionType="2D", RepetitionTime=tr, EchoTime=te, InversionTime=ti,
                             FlipAngle=150)], study_records_contrast=True)
    assert r.label.value in (label, "UNKNOWN") and (r.label.value == label or label == "OTHER"), r.evidence


def test_tof_in_sequence_variant_is_angiography_even_with_an_agent() -> None:
    r = identify_series([_ds("SIEMENS", ScanningSequence="GR", SequenceVariant=["TOF", "SP", "OSP"], MRAcquisitionType="3D",
                             RepetitionTime=24, EchoTime=3.69, FlipAngle=18, ContrastBolusAgent="Magnevist")])
    assert r.label.value == "OTHER", r.evidence


def test_explicit_no_agent_is_pre_contrast() -> None:
    r = identify_series([_ds("GE MEDICAL SYSTEMS", ScanningSequence="SE", SequenceVariant="NONE", MRAcquisitionType="2D",
                             RepetitionTime=500, EchoTime=11, FlipAngle=90, ContrastBolusAgent="NONE")])
    assert r.label.value == "T1" and r.confidence >= DEFAULT_THRESHOLD, r.evidence


def test_radial_mips_are_not_a_localizer() -> None:
    views = []
    for iop in ([0.65, 0.76, 0, 0, 0.01, -1], [1, 0.3, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1]):
        views.append(_ds("Philips Medical Systems", ScanningSequence="GR", SequenceVariant=["SS", "SP"], RepetitionTime=30,
                         EchoTime=6, FlipAngle=35, ImageType=["DERIVED", "SECONDARY", "PROJECTION IMAGE"],
                         ImageOrientationPatient=iop))
    assert identify_series(views).label.value == "OTHER"
