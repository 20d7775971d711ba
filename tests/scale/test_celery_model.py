"""A model pipeline through Celery: warm on the worker, SEG and SR to Orthanc, a re-run replaces.

The demo tumour model (``models/bundles/brain-tumour-demo``) on small single-series FLAIR
studies, run by one ``mrinode worker`` (its own folder, its own warm child) for a node with
``[scale] engine = "celery"``: the model is loaded once for two studies (the node's
``mrinode_model_loads_total``, reported by the worker), each study gets one SEG and one SR
in Orthanc, and a forced re-run of a job (as a redelivered task would be) replaces them
there, by their deterministic UIDs, instead of adding copies.
"""

from __future__ import annotations

import re
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.scale.broker import RabbitBroker
from tests.scale.e2e_support import ENV, TOKEN, all_done, wait_jobs
from tests.scale.workers import WorkerProcess, scale_section
from tests.support.dciodvfy import dciodvfy
from tests.support.mrfiles import write_mr_series
from tests.support.node import NodeProcess
from tests.support.orthanc import OrthancServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BUNDLE = Path(__file__).resolve().parents[2] / "models" / "bundles" / "brain-tumour-demo"
TUMOUR = {"name": "brain-tumour", "function": "dicom_node.pipelines.tumour:run", "enabled": True,
          "options": {"model": str(BUNDLE), "use_pixels": False}}


def _flair_study(folder: Path, n: int = 16) -> str:
    study_uid, paths = write_mr_series(folder, n, size=48, series_description="AX FLAIR")
    for p in paths:
        ds = dcmread(p)
        ds.RepetitionTime, ds.EchoTime, ds.InversionTime = 9000.0, 100.0, 2500.0
        ds.ScanningSequence, ds.SequenceVariant = ["SE", "IR"], ["SK"]
        ds.save_as(p)
    return study_uid


def _objects(orthanc: OrthancServer, study_uid: str) -> list[tuple[str, str]]:
    """(modality, SOP Instance UID) of every instance of a study in Orthanc."""
    sid = orthanc.find_study(study_uid)
    if sid is None:
        return []
    out = []
    for inst in orthanc.get(f"/studies/{sid}/instances"):
        tags = orthanc.get(f"/instances/{inst['ID']}/simplified-tags")
        out.append((str(tags["Modality"]), str(tags["SOPInstanceUID"])))
    return sorted(out)


def test_a_model_runs_warm_on_a_worker_and_a_rerun_replaces_its_results(tmp_path: Path, broker: RabbitBroker,
                                                                       stack: ExitStack) -> None:
    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc"))
    node = stack.enter_context(NodeProcess(
        tmp_path / "node", token=TOKEN, pipelines=[TUMOUR],
        destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
                       "port": orthanc.dicom_port}],
        extra={"routing": {"default_destinations": ["pacs"]}, "scale": scale_section(broker.url)}))
    w = WorkerProcess(tmp_path / "wm", "wm", broker_url=broker.url, node_url=node.url, token=TOKEN, pipelines=[TUMOUR])
    stack.callback(w.kill9)
    w.start()
    uids = [_flair_study(tmp_path / f"in{i}" / "s") for i in range(2)]
    for i, uid in enumerate(uids):
        r = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "+r", "127.0.0.1", str(node.dicom_port),
                            str(tmp_path / f"in{i}")], env=ENV, capture_output=True, text=True, check=False, timeout=60)
        assert r.returncode == 0, r.stderr
        assert node.api("POST", f"/studies/{uid}/complete").json()["queued"]
        wait_jobs(node, f"{i + 1} done", all_done(i + 1), 240, w)
    first = {uid: _objects(orthanc, uid) for uid in uids}
    for uid in uids:
        assert [m for m, _ in first[uid]] == ["SEG", "SR"], first[uid]
    # The objects the worker uploaded are the node's results now, as valid as the writers made them.
    for job in node.api("GET", "/jobs").json():
        assert len(job["outputs"]) == 2 and all(str(node.data_dir) in o for o in job["outputs"]), job["outputs"]
        for out in job["outputs"]:
            report = dciodvfy(out)
            assert report.errors == [], report.output
    metrics = node.api("GET", "/metrics").text
    loads = re.findall(r'^mrinode_model_loads_total\{model="brain-tumour-demo",version="[^"]+"\} (\S+)$', metrics, re.M)
    assert loads == ["1.0"], loads  # loaded once on the worker, warm for the second study
    # Re-run the first job (as a redelivered task would run it again): same UIDs, replaced in Orthanc.
    job = node.api("GET", "/jobs", params={"study_uid": uids[0]}).json()[0]
    assert node.api("POST", f"/jobs/{job['id']}/retry", params={"rerun": "true"}).status_code == 200
    wait_jobs(node, "the re-run done", lambda js: all(j["state"] == "done" for j in js)
              and any(j["attempts"] == 1 and j["id"] == job["id"] and j["updated_at"] > job["updated_at"] for j in js),
              240, w)
    assert _objects(orthanc, uids[0]) == first[uids[0]]
