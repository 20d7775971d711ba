"""TID 1500 SR: volumes in ml referencing SEG segments, sequence identification, no-SEG status."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_node.io.codes import BRATS_SEGMENTS, AlgorithmSpec
from dicom_node.io.reader import read_series
from dicom_node.io.seg import write_seg
from dicom_node.io.sr import segment_volumes_ml, write_measurement_report
from dicom_node.io.volume import Volume
from dicom_node.sequences import SequenceLabel
from tests.io.series_factory import make_series
from tests.support.dciodvfy import dciodvfy

ALGORITHM = AlgorithmSpec(name="tiny-synthetic-segmenter", version="0.1.0")


@dataclass
class Identification:
    series_uid: str
    series_number: int
    description: str
    label: SequenceLabel
    confidence: float


def _study(tmp_path: Path) -> tuple[Volume, Volume]:
    study, frame = generate_uid(), generate_uid()
    a, _ = make_series(
        tmp_path / "t1c", study_uid=study, frame_uid=frame, series_number=3, description="t1_mprage_gd"
    )
    b, _ = make_series(
        tmp_path / "flair", study_uid=study, frame_uid=frame, series_number=4, description="t2_flair"
    )
    return read_series(a)[0], read_series(b)[0]


def _content_items(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    out: list[pydicom.Dataset] = []
    stack = list(ds.ContentSequence)
    while stack:
        item = stack.pop()
        out.append(item)
        stack.extend(item.get("ContentSequence", []))
    return out


def _warnings_other_than_private_scheme(warnings: list[str]) -> list[str]:
    return [w for w in warnings if "Unrecognized defined term = <99MRINODE>" not in w]


def test_measurement_report_with_seg(tmp_path: Path) -> None:
    t1c, flair = _study(tmp_path)
    labels = np.zeros(t1c.shape, np.uint8)
    labels[2:10, 3:9, 2:6] = 2
    labels[4:7, 4:7, 3:5] = 1
    seg = write_seg(labels, t1c, BRATS_SEGMENTS, ALGORITHM)
    volumes = segment_volumes_ml(labels, t1c, BRATS_SEGMENTS)
    voxel_ml = 0.9 * 1.1 * 2.5 / 1000
    assert volumes == pytest.approx({1: 18 * voxel_ml, 2: (192 - 18) * voxel_ml, 3: 0.0})
    idents = [
        Identification(t1c.series_uid, 3, "t1_mprage_gd", SequenceLabel.T1C, 0.97),
        Identification(flair.series_uid, 4, "t2_flair", SequenceLabel.FLAIR, 0.88),
    ]
    sr = write_measurement_report(
        seg=seg,
        reference=t1c,
        source_volumes=[t1c, flair],
        segment_volumes_ml=volumes,
        identifications=idents,
        algorithm=ALGORITHM,
    )
    path = tmp_path / "sr.dcm"
    sr.save_as(path)
    report = dciodvfy(path)
    assert report.errors == [], report.output
    assert _warnings_other_than_private_scheme(report.warnings) == []

    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.StudyInstanceUID == t1c.meta["study_uid"] and ds.SeriesNumber == 901
    evidence = {
        i.ReferencedSOPInstanceUID
        for s in ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for i in s.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence and {r[1] for r in flair.slice_refs} <= evidence

    parsed = hd.sr.Comprehensive3DSR.from_dataset(ds)
    groups = parsed.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2  # segment 3 is empty: no measurement of nothing, the summary says so
    for group in groups:
        ref = group.reference_type
        assert ref == hd.sr.CodedConcept("121191", "DCM", "Referenced Segment") or ref.value == "121191"
        segment = group.referenced_segment
        assert segment is not None and segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert segment.source_series_for_segmentation.value == t1c.series_uid
        assert [site.value.value for site in group.finding_sites] == ["12738006"]  # Brain
        (measurement,) = group.get_measurements()
        assert measurement.unit.value == "ml" and measurement.unit.scheme_designator == "UCUM"
        (number,) = segment.referenced_segment_numbers
        assert measurement.value == pytest.approx(round(volumes[number], 4))
    texts = [
        (item.ConceptNameCodeSequence[0].CodeMeaning, item.ConceptCodeSequence[0].CodeMeaning)
        for item in _content_items(ds)
        if item.ValueType == "CODE"
    ]
    assert ("Identified MR sequence", "T1 weighted post-contrast") in texts
    summaries = [i.TextValue for i in _content_items(ds)
                 if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeMeaning == "Segment summary"]
    assert sorted(summaries)[0].startswith("Enhancing tumour (SEG segment 3): none found")
    assert ("Identified MR sequence", "Fluid attenuated T2 weighted (FLAIR)") in texts
    device_names = [
        i.TextValue
        for i in _content_items(ds)
        if i.ValueType == "TEXT" and "Device Observer Name" in i.ConceptNameCodeSequence[0].CodeMeaning
    ]
    assert device_names == [ALGORITHM.name]
    algo_versions = [
        i.TextValue
        for i in _content_items(ds)
        if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Version"
    ]
    assert algo_versions and set(algo_versions) == {ALGORITHM.version}


def test_report_without_seg_states_what_is_missing(tmp_path: Path) -> None:
    _, flair = _study(tmp_path)
    sr = write_measurement_report(
        seg=None,
        reference=None,
        source_volumes=[flair],
        segment_volumes_ml={},
        identifications=[Identification(flair.series_uid, 4, "t2_flair", SequenceLabel.FLAIR, 0.9)],
        algorithm=ALGORITHM,
        missing_sequences=[SequenceLabel.T1, SequenceLabel.T1C, SequenceLabel.T2],
        notes=["Tumour segmentation needs T1, T1C, T2 and FLAIR; only FLAIR was found."],
    )
    path = tmp_path / "sr_missing.dcm"
    sr.save_as(path)
    report = dciodvfy(path)
    assert report.errors == [], report.output
    assert _warnings_other_than_private_scheme(report.warnings) == []
    items = _content_items(pydicom.dcmread(path))
    codes = [
        (i.ConceptNameCodeSequence[0].CodeMeaning, i.ConceptCodeSequence[0].CodeMeaning)
        for i in items
        if i.ValueType == "CODE"
    ]
    assert ("Analysis status", "Not performed: required sequences missing") in codes
    missing = sorted(value for name, value in codes if name == "Missing required sequence")
    assert missing == [
        "T1 Weighted MR Signal Intensity",
        "T1 weighted post-contrast",
        "T2 Weighted MR Signal Intensity",
    ]
    comments = [
        i.TextValue
        for i in items
        if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeMeaning == "Comment"
    ]
    assert comments == ["Tumour segmentation needs T1, T1C, T2 and FLAIR; only FLAIR was found."]
    image_refs = [i for i in items if i.ValueType == "IMAGE"]
    assert {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in image_refs} <= {
        r[1] for r in flair.slice_refs
    }
    assert image_refs


def test_bad_inputs(tmp_path: Path) -> None:
    t1c, _ = _study(tmp_path)
    seg = write_seg(np.ones(t1c.shape, np.uint8), t1c, BRATS_SEGMENTS[:1], ALGORITHM)
    with pytest.raises(ValueError, match="needs its reference volume"):
        write_measurement_report(
            seg=seg,
            reference=None,
            source_volumes=[],
            segment_volumes_ml={},
            identifications=[],
            algorithm=ALGORITHM,
        )
    with pytest.raises(ValueError, match=r"segment numbers \[2\]"):
        write_measurement_report(
            seg=seg,
            reference=t1c,
            source_volumes=[t1c],
            segment_volumes_ml={2: 1.0},
            identifications=[],
            algorithm=ALGORITHM,
        )
    with pytest.raises(ValueError, match="not a sequence label"):
        write_measurement_report(
            seg=None,
            reference=None,
            source_volumes=[t1c],
            segment_volumes_ml={},
            identifications=[],
            algorithm=ALGORITHM,
            missing_sequences=["T3"],
        )


def test_report_with_seg_and_notes_is_completed_not_not_performed(tmp_path: Path) -> None:
    """Notes beside a SEG (e.g. the sequences used) must not turn the status into "Not performed"."""
    t1c, flair = _study(tmp_path)
    labels = np.zeros(t1c.shape, np.uint8)
    labels[2:10, 3:9, 2:6] = 2
    seg = write_seg(labels, t1c, BRATS_SEGMENTS, ALGORITHM)
    sr = write_measurement_report(
        seg=seg,
        reference=t1c,
        source_volumes=[t1c, flair],
        segment_volumes_ml=segment_volumes_ml(labels, t1c, BRATS_SEGMENTS),
        identifications=[],
        algorithm=ALGORITHM,
        notes=["Sequences used: FLAIR, T1C."],
    )
    path = tmp_path / "sr.dcm"
    sr.save_as(path)
    assert dciodvfy(path).errors == []
    codes = {
        (item.ConceptNameCodeSequence[0].CodeMeaning, item.ConceptCodeSequence[0].CodeMeaning)
        for item in _content_items(pydicom.dcmread(path))
        if item.ValueType == "CODE"
    }
    assert ("Analysis status", "Completed: segmentation produced") in codes
    assert not any(meaning.startswith("Not performed") for _, meaning in codes)
