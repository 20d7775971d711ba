"""The worker's analysis stage (``dicom_node.jobrun.run_spec``) on synthetic DICOM studies.

One analysis per study (every series identified once and read once, whatever the number of
pipelines), pipelines chosen by their cards' sequences narrowed by the configuration, the
"missing" SR when nothing can run, segment codes and colours from the card, and result UIDs
that are the same on every run (so a PACS keeps one copy).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicom_node.jobrun import run_spec
from tests.support.dciodvfy import dciodvfy
from tests.support.orthanc import orthanc_factory  # noqa: F401

pytestmark = pytest.mark.e2e

TUMOUR = "dicom_node.pipelines.tumour:run"
#: The demo deployment's entry (deploy/demo/node.toml): FLAIR required, the others optional.
DEMO_ENTRY = {"name": "brain-tumour", "function": TUMOUR, "required_sequences": ["FLAIR"],
              "optional_sequences": ["T1", "T1C", "T2"], "options": {"model": "brain-tumour-demo"}}


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A T1 + FLAIR study with a tumour (3 mm) and a DWI-only study: their series folders."""
    import torch

    from training.synth import generate_subject, write_subject

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("studies")
    both = write_subject(generate_subject(9310, voxel_mm=3.0, tumour=True, sequences=["T1", "FLAIR"]), out / "tf",
                         dicom=True, nifti=False) / "dicom"
    dwi = write_subject(generate_subject(9311, voxel_mm=3.0, tumour=True, sequences=["DWI"]), out / "dwi",
                        dicom=True, nifti=False) / "dicom"
    return {"study": both, "T1": next(both.glob("*_T1")), "FLAIR": next(both.glob("*_FLAIR")), "DWI": dwi}


def _spec(folders: list[Path], out: Path, pipelines: list[dict[str, Any]]) -> dict[str, Any]:
    files = sorted(f for d in folders for f in d.rglob("*.dcm"))
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    out.mkdir(parents=True, exist_ok=True)
    return {"study_uid": study_uid, "instance_paths": [str(f) for f in files], "out_dir": str(out), "device": "cpu",
            "use_pixels": False, "pipelines": pipelines}


def _uids(path: str | Path) -> tuple[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _c_store(port: int, paths: list[Path]) -> list[int]:
    """C-STORE files to ``127.0.0.1:port`` over one association; the status of each."""
    from pynetdicom import AE

    datasets = [pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title="MRINODE")
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _texts(path: str | Path) -> list[str]:
    return [str(e.value) for e in pydicom.dcmread(path).iterall() if e.keyword == "TextValue"]


@pytest.mark.slow
def test_flair_alone_runs_the_tumour_pipeline_with_flair_alone(studies, tmp_path) -> None:
    result = run_spec(_spec([studies["FLAIR"]], tmp_path / "out", [DEMO_ENTRY]))
    s = result["summary"]["brain-tumour"]
    assert list(s["sequences_used"]) == ["FLAIR"]
    assert result["analysis"]["ran"] == ["brain-tumour"]
    names = sorted(Path(p).name for p in result["outputs"])
    assert names == ["seg.dcm", "sr.dcm"]
    for p in result["outputs"]:
        assert dciodvfy(p).errors == [], dciodvfy(p).output
    seg = pydicom.dcmread(next(p for p in result["outputs"] if p.endswith("seg.dcm")))
    assert {str(s.SegmentLabel) for s in seg.SegmentSequence} <= {"Necrotic core", "Oedema", "Enhancing tumour"}


def test_dwi_alone_runs_nothing_and_gets_the_missing_sr(studies, tmp_path) -> None:
    result = run_spec(_spec([studies["DWI"]], tmp_path / "out", [DEMO_ENTRY]))
    assert result["analysis"]["ran"] == [] and result["analysis"]["skipped"] == ["brain-tumour"]
    assert [Path(p).name for p in result["outputs"]] == ["sr.dcm"]
    sr = result["outputs"][0]
    assert dciodvfy(sr).errors == [], dciodvfy(sr).output
    texts = _texts(sr)
    assert any("was not run: it needs FLAIR; the study holds DWI" in t for t in texts), texts
    assert result["summary"]["brain-tumour"]["missing"] == ["FLAIR"]
    assert "NOT-PERFORMED" in str(pydicom.dcmread(sr))


def test_the_configuration_narrows_the_card(studies, tmp_path) -> None:
    """Config ``required_sequences = ["FLAIR"]`` on a T1-only study: the model does not run (its card alone would)."""
    result = run_spec(_spec([studies["T1"]], tmp_path / "out", [DEMO_ENTRY]))
    assert [Path(p).name for p in result["outputs"]] == ["sr.dcm"]
    assert "needs FLAIR" in result["summary"]["brain-tumour"]["skipped"]
    assert dciodvfy(result["outputs"][0]).errors == []


def test_a_pipeline_without_a_card_is_gated_by_the_configuration(studies, tmp_path) -> None:
    """The test pipeline configured to need FLAIR: skipped on a DWI study, which still gets an SR; runs on FLAIR."""
    entry = {"name": "threshold", "function": "dicom_node.pipelines.testing:run", "required_sequences": ["FLAIR"],
             "options": {}}
    skipped = run_spec(_spec([studies["DWI"]], tmp_path / "dwi", [entry]))
    assert [Path(p).name for p in skipped["outputs"]] == ["sr.dcm"]
    assert any("Pipeline threshold was not run: it needs FLAIR" in t for t in _texts(skipped["outputs"][0]))
    ran = run_spec(_spec([studies["FLAIR"]], tmp_path / "flair", [entry]))
    assert [Path(p).name for p in ran["outputs"]] == ["test-threshold-seg.dcm"]


def test_a_configured_sequence_the_card_does_not_take_is_refused(studies, tmp_path) -> None:
    entry = dict(DEMO_ENTRY, required_sequences=["DWI"])
    with pytest.raises(ValueError, match=r"pipeline 'brain-tumour'.*DWI.*may only narrow the card"):
        run_spec(_spec([studies["DWI"]], tmp_path / "out", [entry]))


@pytest.mark.slow
def test_a_study_is_identified_and_read_once_for_two_pipelines(studies, tmp_path, monkeypatch) -> None:
    import dicom_node.identify.study as study_mod
    import dicom_node.io.reader as reader_mod

    identified: Counter[str] = Counter()
    read: Counter[str] = Counter()
    real_identify, real_read = study_mod.identify_series, reader_mod.read_series

    def counting_identify(headers: Any, *args: Any, **kwargs: Any) -> Any:
        identified[str(headers[0].SeriesInstanceUID)] += 1
        return real_identify(headers, *args, **kwargs)

    def counting_read(paths: Any) -> Any:
        paths = list(paths)
        read[str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)] += 1
        return real_read(paths)

    monkeypatch.setattr(study_mod, "identify_series", counting_identify)
    monkeypatch.setattr(reader_mod, "read_series", counting_read)
    flair_only = {"name": "tumour-flair", "function": TUMOUR, "required_sequences": ["FLAIR"], "optional_sequences": [],
                  "options": {}}
    full = {"name": "tumour-all", "function": TUMOUR, "options": {}}
    result = run_spec(_spec([studies["study"]], tmp_path / "out", [full, flair_only]))
    assert len(identified) == 2 and set(identified.values()) == {1}, identified
    assert len(read) == 2 and set(read.values()) == {1}, read
    assert sorted(result["summary"]["tumour-all"]["sequences_used"]) == ["FLAIR", "T1"]
    assert list(result["summary"]["tumour-flair"]["sequences_used"]) == ["FLAIR"]
    assert sorted(Path(p).parent.name + "/" + Path(p).name for p in result["outputs"]) == [
        "tumour-all/seg.dcm", "tumour-all/sr.dcm", "tumour-flair/seg.dcm", "tumour-flair/sr.dcm"]
    # one result series per pipeline: their UIDs differ
    assert len({_uids(p) for p in result["outputs"]}) == 4


def test_segments_come_from_the_card(studies, tmp_path) -> None:
    """A bundle whose card renames, recodes and recolours a label: the SEG and SR say what the card says."""
    src = Path(__file__).resolve().parents[2] / "models" / "bundles" / "brain-tumour-demo"
    folder = tmp_path / "bundles" / "recoloured"
    shutil.copytree(src, folder)
    card = json.loads((folder / "card.json").read_text())
    card["name"], card["version"] = "brain-tumour-recoloured", "9.9.9"
    card["labels"][2].update(name="Contrast-enhancing tumour", tracking_id="CET", colour=[0, 0, 255],
                             type=["1240414004", "SCT", "Malignant neoplasm of brain"])
    card["algorithm"] = {"name": "recoloured-net", "version": "9.9.9-r1", "source": "test"}
    (folder / "card.json").write_text(json.dumps(card))
    entry = {"name": "recoloured", "function": "dicom_node.pipelines.segmentation:run",
             "options": {"model": "brain-tumour-recoloured", "models_dir": str(tmp_path / "bundles")}}
    result = run_spec(_spec([studies["study"]], tmp_path / "out", [entry]))
    seg_path = next(p for p in result["outputs"] if p.endswith("seg.dcm"))
    assert dciodvfy(seg_path).errors == []
    seg = pydicom.dcmread(seg_path)
    by_label = {str(s.SegmentLabel): s for s in seg.SegmentSequence}
    assert "Enhancing tumour" not in by_label
    if "Contrast-enhancing tumour" in by_label:  # present when the model finds enhancing tumour
        item = by_label["Contrast-enhancing tumour"]
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "1240414004"
        assert item.TrackingID == "CET"
        import highdicom as hd

        assert list(item.RecommendedDisplayCIELabValue) == list(hd.color.CIELabColor.from_rgb(0, 0, 255).value)
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion, algo.AlgorithmSource) == ("recoloured-net", "9.9.9-r1", "test")
    sr_path = next(p for p in result["outputs"] if p.endswith("sr.dcm"))
    assert dciodvfy(sr_path).errors == []
    assert result["summary"]["recoloured"]["model"] == "brain-tumour-recoloured"


def test_mrinode_infer_twice_writes_the_same_uids(studies, tmp_path, capsys) -> None:
    from dicom_node.cli import main

    for out in ("a", "b"):
        assert main(["infer", str(studies["FLAIR"]), "--out", str(tmp_path / out), "--device", "cpu",
                     "--headers-only"]) == 0
    capsys.readouterr()
    for name in ("seg.dcm", "sr.dcm"):
        assert _uids(tmp_path / "a" / name) == _uids(tmp_path / "b" / name)


def test_results_delivered_twice_are_stored_once(studies, tmp_path, orthanc_factory) -> None:  # noqa: F811
    """The same job run twice (a retry) and both results C-STOREd to a real Orthanc: one SEG, one SR."""
    orthanc = orthanc_factory()
    spec_dirs = [tmp_path / "run1", tmp_path / "run2"]
    uids = []
    for out in spec_dirs:
        result = run_spec(_spec([studies["FLAIR"]], out, [DEMO_ENTRY]))
        assert sorted(Path(p).name for p in result["outputs"]) == ["seg.dcm", "sr.dcm"]
        uids.append(sorted(_uids(p) for p in result["outputs"]))
    assert uids[0] == uids[1] and len(set(uids[0])) == 2
    # the SR of the second run references the SEG of the second run (the same UID)
    seg_uid = _uids(spec_dirs[1] / "brain-tumour" / "seg.dcm")[1]
    assert seg_uid in str(pydicom.dcmread(spec_dirs[1] / "brain-tumour" / "sr.dcm"))
    for out in spec_dirs:
        assert _c_store(orthanc.dicom_port, sorted(out.rglob("*.dcm"))) == [0, 0]
    study_uid = str(pydicom.dcmread(next(studies["FLAIR"].glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)
    sid = orthanc.find_study(study_uid)
    assert sid is not None
    series = orthanc.get(f"/studies/{sid}/series")
    by_modality = Counter(s["MainDicomTags"].get("Modality", "") for s in series)
    instances = {s["MainDicomTags"].get("Modality", ""): len(s["Instances"]) for s in series}
    assert by_modality == {"SEG": 1, "SR": 1}, by_modality
    assert instances == {"SEG": 1, "SR": 1}, instances


@pytest.mark.parametrize(
    ("card", "config", "required", "usable"),
    [
        ((["FLAIR"], ["T1", "FLAIR"]), ([], []), ("FLAIR",), ("T1", "FLAIR")),  # the card alone
        (([], ["T1", "T1C", "T2", "FLAIR"]), (["FLAIR"], ["T1"]), ("FLAIR",), ("T1", "FLAIR")),  # config narrows
        (([], ["T1", "T2"]), ([], ["T2"]), (), ("T2",)),
        ((["T1"], ["T1", "T2"]), ([], ["T2"]), ("T1",), ("T1", "T2")),  # the card's required one stays
        (None, (["FLAIR"], ["T2"]), ("FLAIR",), ("FLAIR", "T2")),  # no card: the configuration alone
        (None, ([], []), (), ()),  # no card, no lists: runs on anything
    ],
)
def test_needs_combine_card_and_configuration(card: Any, config: Any, required: Any, usable: Any) -> None:
    from dicom_node.pipelines.analysis import combine_needs

    needs = combine_needs(card[0] if card else None, card[1] if card else None, *config)
    assert (needs.required, needs.usable) == (required, usable)
    assert needs.runnable(set(usable)) and (needs.runnable(set()) == (not usable and not required))
