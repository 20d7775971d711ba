"""The demo's read-back of results: SEG volumes, overlay on another grid, stage table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicom_node.demo.report import overlay_png, seg_volumes
from dicom_node.demo.scenario import LoopTimes, model_seconds, pipeline_breakdown, stage_table
from dicom_node.demo.summary import sequences_from_summary
from tests.support.mrfiles import write_mr_series


@pytest.mark.parametrize("labelmap", [False, True])
def test_seg_volumes_and_overlay_on_a_finer_grid(tmp_path: Path, labelmap: bool) -> None:
    from dicom_node.io.codes import BRATS_SEGMENTS, AlgorithmSpec
    from dicom_node.io.reader import read_series
    from dicom_node.io.seg import write_seg

    study_uid, coarse = write_mr_series(tmp_path / "t1", 8, size=32)
    volume = read_series(coarse)[0]
    labels = np.zeros(volume.data.shape, dtype=np.uint8)
    labels[10:20, 10:20, 2:6] = 2  # 400 voxels of 1 mm^3
    labels[12:15, 12:15, 3:5] = 1  # 18 voxels
    seg = write_seg(labels, volume, list(BRATS_SEGMENTS[:3]), AlgorithmSpec(name="t", version="1", source="mrinode"),
                    labelmap=labelmap)
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    by_number = {v.number: v for v in seg_volumes(path.read_bytes())}
    assert by_number[1].ml == pytest.approx(18 / 1000)
    assert by_number[2].ml == pytest.approx((400 - 18) / 1000)
    assert by_number[3].ml == 0.0
    # A "FLAIR" of the same study on a 2x finer in-plane grid over the same field of view.
    _, fine = write_mr_series(tmp_path / "flair", 8, size=64, study_uid=study_uid)
    import pydicom

    for p in fine:
        ds = pydicom.dcmread(p)
        ds.PixelSpacing = [0.5, 0.5]
        ds.ImagePositionPatient = [-15.75, -15.75, float(ds.InstanceNumber - 1)]
        ds.save_as(p)
    note = overlay_png(path.read_bytes(), fine, tmp_path / "overlay.png")
    assert (tmp_path / "overlay.png").read_bytes()[:4] == b"\x89PNG"
    # 10 x 10 voxels of 1 mm become 20 x 20 pixels of 0.5 mm on the finest slice.
    assert "400 labelled pixels" in note, note


def test_stage_table_and_model_share_from_the_job() -> None:
    times = LoopTimes(study_uid="1.2", stored=100.0, routed=103.0, sent_to_node=105.0, seg_in=150.0, sr_in=151.0)
    times.job = {
        "started_at": 106.0,
        "durations": {"pipeline_s": 40.0, "export_s": 1.0},
        "summary": {"brain-tumour": {"seconds": {"identify": 5.0, "model_forward": 20.0, "write": 1.0},
                                     "sequences_found": {"FLAIR": "t2_tirm_tra_dark-fluid"}}},
    }
    rows = dict(stage_table(times))
    assert rows["Orthanc + plugin: wait until the study is complete (quiet period or StableAge)"] == 3.0
    assert rows["node: queue wait"] == 1.0 and rows["node: pipeline (identify, model, SEG + SR)"] == 40.0
    assert rows["node: export to Orthanc, Orthanc stores"] == pytest.approx(5.0)
    assert rows["total: last instance stored -> SEG + SR stored"] == 51.0
    assert model_seconds(times) == 20.0
    assert dict(pipeline_breakdown(times))["worker (outside the stages; imports and model load when cold)"] == 14.0
    assert sequences_from_summary(times.job["summary"]) == {"t2_tirm_tra_dark-fluid": "FLAIR"}
