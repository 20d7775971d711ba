"""``mrinode infer`` on small DICOM studies: SEG + SR that pass dciodvfy and overlay the source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.cli import main
from tests.support.dciodvfy import dciodvfy
from tests.support.mrfiles import write_mr_series


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    import torch

    from training.synth import generate_subject, write_subject

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("study")
    folder = write_subject(generate_subject(9200, voxel_mm=3.0, tumour=True), out, dicom=True, nifti=False)
    return folder / "dicom"


def test_infer_writes_valid_seg_and_sr_that_overlay_the_source(study, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["infer", str(study), "--out", str(out), "--device", "cpu", "--headers-only"]) == 0
    printed = capsys.readouterr().out
    assert "sequences used:" in printed and "mL" in printed
    seg_path, sr_path = out / "seg.dcm", out / "sr.dcm"
    for path in (seg_path, sr_path):
        report = dciodvfy(path)
        assert report.errors == [], report.output
    seg = pydicom.dcmread(seg_path)
    sources = {}
    for f in study.rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        sources[ds.SOPInstanceUID] = ds
    ref_series = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert seg.FrameOfReferenceUID == next(iter(sources.values())).FrameOfReferenceUID
    assert int(seg.NumberOfFrames) > 0, "the demo model should find the synthetic tumour"
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        src = sources[uid]
        assert src.SeriesInstanceUID == ref_series
        pos = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(pos, [float(v) for v in src.ImagePositionPatient], atol=1e-4)
    shared = seg.SharedFunctionalGroupsSequence[0]
    ref = next(s for s in sources.values() if s.SeriesInstanceUID == ref_series)
    assert np.allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                       [float(v) for v in ref.ImageOrientationPatient], atol=1e-4)
    assert (seg.Rows, seg.Columns) == (ref.Rows, ref.Columns)
    sr = pydicom.dcmread(sr_path)
    assert sr.Modality == "SR"


def test_study_without_usable_sequences_gets_an_sr_saying_so(tmp_path, capsys) -> None:
    write_mr_series(tmp_path / "in", 6, series_description="LOCALIZER 3-PLANE")
    out = tmp_path / "out"
    assert main(["infer", str(tmp_path / "in"), "--out", str(out), "--device", "cpu", "--headers-only"]) == 0
    printed = capsys.readouterr().out
    assert "was not run" in printed and "LOCALIZER" in printed
    assert sorted(p.name for p in out.iterdir()) == ["sr.dcm"]
    report = dciodvfy(out / "sr.dcm")
    assert report.errors == [], report.output
    text = str(pydicom.dcmread(out / "sr.dcm"))
    assert "T1C" in text or "FLAIR" in text


def test_unknown_model_is_a_sentence_not_a_traceback(study, tmp_path, capsys) -> None:
    assert main(["infer", str(study), "--out", str(tmp_path / "o"), "--model", "brain-tumor-demo"]) == 2
    err = capsys.readouterr().err
    assert "no model bundle named 'brain-tumor-demo'" in err and "Did you mean" in err


def test_a_chosen_series_the_reader_refuses_is_reported_not_a_failed_job(study, tmp_path) -> None:
    """A FLAIR with a missing slice is left out and said in the SR; the other sequences still run."""
    import shutil

    from dicom_node.pipelines import PipelineRequest
    from dicom_node.pipelines.tumour import run

    broken = tmp_path / "study"
    shutil.copytree(study, broken)
    flair = sorted(d for d in broken.iterdir() if d.name.endswith("_FLAIR"))[0]
    files = sorted(flair.glob("*.dcm"))
    files[len(files) // 2].unlink()  # a gap in the middle of the series
    out = tmp_path / "out"
    result = run(PipelineRequest(
        study_uid="1.2.3", instance_paths=sorted(broken.rglob("*.dcm")), out_dir=out,
        options={"use_pixels": False}, device="cpu",
    ))
    assert "FLAIR" not in result.summary["sequences_used"]
    assert result.summary["unreadable"] and result.summary["unreadable"][0].startswith("FLAIR not used:")
    assert "missing" in result.summary["unreadable"][0]
    names = sorted(p.name for p in result.outputs)
    assert names == ["seg.dcm", "sr.dcm"]
    texts = [str(e.value) for e in pydicom.dcmread(out / "sr.dcm").iterall() if e.keyword == "TextValue"]
    assert any(t.startswith("FLAIR not used:") for t in texts)
    assert dciodvfy(out / "sr.dcm").errors == []
