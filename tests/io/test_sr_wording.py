"""The SR's words for a segment are the SEG's: its label beside the finding's code, the same tracking UID."""

from __future__ import annotations

import numpy as np
import pydicom

from dicom_node.io.codes import BRATS_SEGMENTS, AlgorithmSpec
from dicom_node.io.reader import read_series
from dicom_node.io.seg import write_seg
from dicom_node.io.sr import segment_volumes_ml, write_measurement_report
from tests.io.series_factory import make_series
from tests.support.dciodvfy import dciodvfy


def _items(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    out, stack = [], list(ds.ContentSequence)
    while stack:
        item = stack.pop()
        out.append(item)
        stack.extend(item.get("ContentSequence", []))
    return out


def test_each_segment_group_says_the_segment_label_and_code(tmp_path) -> None:
    vol = read_series(make_series(tmp_path / "t1c", shape=(16, 16, 6), frame_uid="1.2.3.4")[0])[0]
    labels = np.zeros(vol.shape, np.uint8)
    labels[3:9, 3:9, 1:4] = 2
    labels[5:7, 5:7, 2] = 3
    algorithm = AlgorithmSpec(name="t", version="1")
    seg = write_seg(labels, vol, BRATS_SEGMENTS, algorithm)
    sr = write_measurement_report(seg=seg, reference=vol, source_volumes=[vol],
                                  segment_volumes_ml=segment_volumes_ml(labels, vol, BRATS_SEGMENTS),
                                  identifications=[], algorithm=algorithm)
    sr.save_as(tmp_path / "sr.dcm")
    assert dciodvfy(tmp_path / "sr.dcm").errors == []
    by_uid = {str(s.TrackingUID): s for s in seg.SegmentSequence}
    groups = [item for item in pydicom.dcmread(tmp_path / "sr.dcm").ContentSequence if "ContentSequence" in item]
    seen: set[int] = set()
    for container in groups:
        for group in container.ContentSequence:
            items = list(group.get("ContentSequence", []))
            ident = next((i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "112039"), None)  # Tracking Identifier
            uid = next((i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "112040"), None)  # Tracking UID
            finding = next((i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "121071"), None)  # Finding
            if ident is None or uid is None or finding is None:
                continue
            segment = by_uid[str(uid.UID)]
            assert ident.TextValue == segment.SegmentLabel
            assert finding.ConceptCodeSequence[0].CodeValue == segment.SegmentedPropertyTypeCodeSequence[0].CodeValue
            assert finding.ConceptCodeSequence[0].CodingSchemeDesignator == (
                segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator)
            seen.add(int(segment.SegmentNumber))
    # segment 1 (necrotic core) is empty: no group measures it, and no "0.00 ml" either
    assert seen == {2, 3}
    texts = [i.TextValue for i in _items(pydicom.dcmread(tmp_path / "sr.dcm")) if i.ValueType == "TEXT"]
    assert "Necrotic core (SEG segment 1): none found." in texts
    assert not any("0.00 ml" in t for t in texts)
