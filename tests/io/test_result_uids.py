"""Deterministic result UIDs: the same (study, model, version, pipeline) always gives the same SEG and SR."""

from __future__ import annotations

import numpy as np
from pydicom.uid import UID

from dicom_node.io.codes import BRATS_SEGMENTS, AlgorithmSpec
from dicom_node.io.seg import write_seg
from dicom_node.io.sr import segment_volumes_ml, write_measurement_report
from dicom_node.pipelines.uids import result_uids
from tests.io.series_factory import make_series

ALGORITHM = AlgorithmSpec(name="test", version="1")


def test_result_uids_are_a_function_of_study_model_version_and_pipeline() -> None:
    a = result_uids("1.2.3", "brain-tumour-demo", "0.1.0", "brain-tumour")
    assert a == result_uids("1.2.3", "brain-tumour-demo", "0.1.0", "brain-tumour")
    uids = [a.seg_series, a.seg_instance, a.sr_series, a.sr_instance]
    assert len(set(uids)) == 4 and all(UID(u).is_valid and len(u) <= 64 for u in uids)
    others = [result_uids("1.2.4", "brain-tumour-demo", "0.1.0", "brain-tumour"),
              result_uids("1.2.3", "other", "0.1.0", "brain-tumour"),
              result_uids("1.2.3", "brain-tumour-demo", "0.2.0", "brain-tumour"),
              result_uids("1.2.3", "brain-tumour-demo", "0.1.0", "tumour-flair")]
    assert all(o.seg_instance not in uids and o.sr_instance not in uids for o in others)


def test_seg_and_sr_written_twice_with_the_same_uids_are_the_same(tmp_path) -> None:
    from dicom_node.io.reader import read_series

    vol = read_series(make_series(tmp_path / "t1c", shape=(16, 16, 6), frame_uid="1.2.3.4")[0])[0]
    labels = np.zeros(vol.shape, np.uint8)
    labels[4:9, 4:9, 2:4] = 3
    labels[6:8, 6:8, 2] = 1
    uids = result_uids("1.2.3", "test", "1", "p")
    dumps = []
    for _ in range(2):
        seg = write_seg(labels, vol, BRATS_SEGMENTS, ALGORITHM, series_instance_uid=uids.seg_series,
                        sop_instance_uid=uids.seg_instance)
        sr = write_measurement_report(
            seg=seg, reference=vol, source_volumes=[vol], segment_volumes_ml=segment_volumes_ml(labels, vol, BRATS_SEGMENTS),
            identifications=[], algorithm=ALGORITHM, notes=["n"], series_instance_uid=uids.sr_series,
            sop_instance_uid=uids.sr_instance)
        seg_uids = [str(s.TrackingUID) for s in seg.SegmentSequence]
        sr_uids = sorted(str(e.value) for e in sr.iterall() if e.keyword == "UID")
        dumps.append((seg.SOPInstanceUID, seg.SeriesInstanceUID, sr.SOPInstanceUID, sr.SeriesInstanceUID, seg_uids, sr_uids))
    assert dumps[0] == dumps[1]
    assert dumps[0][0] == uids.seg_instance and dumps[0][2] == uids.sr_instance
    assert len(set(dumps[0][4])) == len(BRATS_SEGMENTS)


def test_without_given_uids_each_seg_is_new(tmp_path) -> None:
    from dicom_node.io.reader import read_series

    vol = read_series(make_series(tmp_path / "t1", shape=(8, 8, 3), frame_uid="1.2.3.4")[0])[0]
    labels = np.ones(vol.shape, np.uint8)
    a, b = (write_seg(labels, vol, BRATS_SEGMENTS[:1], ALGORITHM) for _ in range(2))
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.SegmentSequence[0].TrackingUID != b.SegmentSequence[0].TrackingUID
