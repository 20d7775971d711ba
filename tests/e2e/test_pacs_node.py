"""The whole loop with real parts: storescu → Orthanc (mrinode plugin, DICOMweb) → rule →
``mrinode serve`` (tumour pipeline, shipped demo bundle) → SEG + SR back in the same study.

One Orthanc and one node serve four studies sent together: two synthetic studies (4 and
2 sequences; both must complete), one without any sequence the model uses (it must get an
SR saying what was missing) and a CT (never routed). Results must not route again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from dicom_node.demo.report import seg_volumes, sr_text_rows
from dicom_node.demo.scenario import copy_study
from tests.plugin.pacs_helpers import PLUGIN_SCRIPT, ct_series, storescu, synthetic_study, wait_for
from tests.support.dciodvfy import dciodvfy
from tests.support.mrfiles import write_mr_series
from tests.support.node import NodeProcess
from tests.support.orthanc import DICOMWEB_PLUGIN, OrthancServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

TUMOUR_PIPELINE: dict[str, Any] = {
    "name": "brain-tumour",
    "function": "dicom_node.pipelines.tumour:run",
    "enabled": True,
    # No window overlap: the same model at about half the CPU time (the demo keeps the card's).
    "options": {"model": "brain-tumour-demo", "overlap": 0.0},
}

RULES = """
[nodes.mrinode]
modality = "mrinode"
url = "{url}"
token = "test-token"
ae_titles = ["MRINODE"]
manufacturers = ["mrinode"]

[[rules]]
name = "brain-mr"
node = "mrinode"
modality = ["MR"]
calling_ae = ["SCANNER1"]
"""


@pytest.fixture(scope="module")
def source_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic 4-sequence study with a tumour, generated once for this module."""
    return synthetic_study(tmp_path_factory.getbasetemp() / "pacs-synth")


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Servers entered here are stopped at the end of the test, last started first."""
    with ExitStack() as s:
        yield s


def _qido(orthanc: OrthancServer, study_uid: str) -> dict[str, str]:
    """Modality → Series Instance UID of the study's series, through DICOMweb QIDO-RS."""
    rows = orthanc.get(f"/dicom-web/studies/{study_uid}/series")
    return {r["00080060"]["Value"][0]: r["0020000E"]["Value"][0] for r in rows}


def _wado_first(orthanc: OrthancServer, study_uid: str, series_uid: str, out: Path) -> Path:
    """The series' first instance through DICOMweb WADO-RS (multipart/related)."""
    base = f"/dicom-web/studies/{study_uid}/series/{series_uid}"
    sop = orthanc.get(f"{base}/instances")[0]["00080018"]["Value"][0]
    with orthanc.client() as c:
        r = c.get(f"{base}/instances/{sop}", headers={"Accept": 'multipart/related; type="application/dicom"'})
    boundary = r.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    part = r.content.split(b"--" + boundary.encode())[1]
    out.write_bytes(part.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n"))
    return out


def test_studies_go_to_the_node_and_seg_and_sr_come_back(tmp_path: Path, stack: ExitStack, source_study: Path) -> None:
    node_port = free_port()
    orthanc_dicom = free_port()
    node = stack.enter_context(NodeProcess(
        tmp_path / "node", dicom_port=node_port,
        destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc_dicom}],
        pipelines=[TUMOUR_PIPELINE],
        extra={"workers": {"timeout_s": 600.0}},
    ))
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES.format(url=node.url))
    orthanc = stack.enter_context(OrthancServer(
        tmp_path / "orthanc", dicom_port=orthanc_dicom,
        modalities={"mrinode": ("MRINODE", "127.0.0.1", node_port)},
        plugins=[DICOMWEB_PLUGIN], python_script=PLUGIN_SCRIPT,
        extra_config={"StableAge": 2, "UserMetadata": {"MrinodeStatus": 4401},
                      "Mrinode": {"RulesFile": str(rules), "StateFile": str(tmp_path / "state.json")}},
    ))
    uid_a, files_a = copy_study(source_study, tmp_path / "a")
    uid_b, files_b = copy_study(source_study, tmp_path / "b", series=("T1C", "FLAIR"))  # a 2-sequence visit
    uid_c, files_c = write_mr_series(tmp_path / "c", 6, series_description="ep2d_diff_b1000_tra")
    uid_ct, files_ct = ct_series(tmp_path / "ct", 3)
    # Two scanners send at the same time.
    senders = [threading.Thread(target=storescu, args=(orthanc.dicom_port, f), kwargs={"calling": "SCANNER1"})
               for f in (files_a, files_b + files_c + files_ct)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()

    def modalities(uid: str) -> list[str]:
        return orthanc.study_modalities(uid)

    for uid in (uid_a, uid_b):
        wait_for(lambda: {"SEG", "SR"} <= set(modalities(uid)), 600, f"SEG and SR of study {uid}")  # noqa: B023
    wait_for(lambda: "SR" in modalities(uid_c), 300, "the SR of the study without model sequences")

    # A: SEG and SR found through DICOMweb, in the same study, valid, with a tumour volume.
    series = _qido(orthanc, uid_a)
    assert {"MR", "SEG", "SR"} <= set(series)
    seg_path = _wado_first(orthanc, uid_a, series["SEG"], tmp_path / "seg.dcm")
    sr_path = _wado_first(orthanc, uid_a, series["SR"], tmp_path / "sr.dcm")
    for path, modality in ((seg_path, "SEG"), (sr_path, "SR")):
        ds = dcmread(path)
        assert ds.Modality == modality and ds.StudyInstanceUID == uid_a
        report = dciodvfy(path)
        assert report.errors == [], report.output
    volumes = seg_volumes(seg_path.read_bytes())
    assert volumes and sum(v.ml for v in volumes) > 0
    # The SR's volumes are the SEG's (read back here from the SEG's own frames and spacing).
    reported = [float(r.split("Volume:")[1].split()[0]) for r in sr_text_rows(sr_path.read_bytes(), limit=400)
                if r.strip().startswith("Volume:")]
    # (a segment with no voxels gets no measurement group: "none found" in the report's text instead)
    assert reported == pytest.approx([round(v.ml, 2) for v in volumes if v.ml > 0], abs=0.011)
    # C: an SR saying what was missing, and no SEG.
    assert "SEG" not in modalities(uid_c)
    c_sr = _qido(orthanc, uid_c)["SR"]
    text = " ".join(sr_text_rows(_wado_first(orthanc, uid_c, c_sr, tmp_path / "c-sr.dcm").read_bytes(), limit=200))
    assert "not run" in text and "FLAIR" in text, text
    # The CT was decided against and never reached the node.
    ct_id = orthanc.find_study(uid_ct)
    ct_view = wait_for(lambda: (v := orthanc.get(f"/mrinode/studies/{ct_id}"))["decisions"] and v, 30, "the CT decision")
    assert ct_view["decisions"][-1]["action"] == "none" and not ct_view["state"].get("sends")
    assert node.api("GET", f"/studies/{uid_ct}").status_code == 404
    # Loop safety: once results are in, one job per study, one send per study, status "results".
    for uid in (uid_a, uid_b, uid_c):
        sid = orthanc.find_study(uid)
        def settled(study_id: str | None = sid) -> dict[str, Any] | None:
            v: dict[str, Any] = orthanc.get(f"/mrinode/studies/{study_id}")
            done = v["status"] == "results" and v["decisions"][-1]["action"] == "already-sent"
            return v if done else None

        view = wait_for(settled, 60, f"the results status of {uid}")
        assert len(view["state"]["sends"]) == 1
        assert view["decisions"][-1]["action"] == "already-sent"
        assert len(node.api("GET", "/jobs", params={"study_uid": uid}).json()) == 1
        with orthanc.client() as c:
            assert c.get(f"/studies/{sid}/metadata/MrinodeStatus").text == "results"
    assert view["node_jobs"]["mrinode"][0]["state"] == "done"
