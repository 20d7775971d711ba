"""No patient identifier leaves a study's DICOM files: a full run scanned end to end.

A study whose every patient and study field holds a distinctive string is sent by dcmtk's
storescu to a real ``mrinode serve``, completed over REST, processed by the test pipeline
(a highdicom SEG) and exported to a dcmtk storescp. Then every file the node wrote that
is not a DICOM file (its log — stdout and stderr —, the audit log, the database and its
WAL, every job folder's ``worker.log`` and ``result.json``) and every REST answer is
searched for those strings; the node's log and the job logs are also searched for the
raw Study, Series and SOP Instance UIDs (input and output), and must be well formed
(every line a record or a continuation of one, no control character).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support.logscan import log_problems
from tests.support.mrfiles import write_mr_series
from tests.support.node import TEST_PIPELINE, NodeProcess
from tests.support.orthanc import free_port

pytestmark = pytest.mark.e2e
ENV = dict(os.environ, TCP_NODELAY="1")

#: Every patient and study field, with a string found nowhere else.
PLANTED: dict[str, str] = {
    "PatientName": "Zyxwvutq^Qorblefax^Mid^^",
    "PatientID": "PIDQ7734291",
    "PatientBirthDate": "19411123",
    "AccessionNumber": "ACCZ99817",
    "IssuerOfPatientID": "IssuerBlorvq",
    "OtherPatientIDs": "OPIDX55123",
    "OtherPatientNames": "Glarbnok^Vexilla",
    "PatientAddress": "17 Quuxmire Lane",
    "PatientTelephoneNumbers": "+44 7700 918273",
    "PatientComments": "Commentzorp",
    "ReferringPhysicianName": "Drfoo^Kwizzle",
    "RequestingPhysician": "Reqphys^Trollop",
    "PerformingPhysicianName": "Perfdoc^Zanzibarq",
    "OperatorsName": "Opername^Flibbet",
    "InstitutionName": "Blorvington Qospital",
    "InstitutionAddress": "99 Snarkhaven Road",
    "StudyID": "SIDQ4471",
    "StudyDescription": "Flumphstudy Qdesc",
}


def _needles() -> list[str]:
    """The planted strings, and their parts (a log might print a name without its carets).

    No short run of digits alone: random UIDs in the database would hold one by chance.
    """
    out: set[str] = set()
    for value in PLANTED.values():
        out.add(value.strip("^"))
        out.update(p for p in value.replace("^", " ").split() if len(p) >= 5 and not p.isdigit())
    out.update({"1941-11-23", "7700 918273"})
    return sorted(out)


def _plant(folder: Path) -> tuple[str, list[str]]:
    study_uid, paths = write_mr_series(folder, 6)
    uids = {study_uid}
    for p in paths:
        ds = dcmread(p)
        for keyword, value in PLANTED.items():
            setattr(ds, keyword, value)
        ds.save_as(p, enforce_file_format=True)
        uids.update({str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.FrameOfReferenceUID)})
    return study_uid, sorted(uids)


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(132)[128:132] == b"DICM"


def _leaks(node: NodeProcess, needles: list[str]) -> tuple[list[str], list[Path]]:
    """Planted strings found in the files the node wrote that are not DICOM files, and those files."""
    written = [p for p in node.workdir.rglob("*") if p.is_file() and p != node.config_path]
    dicom = [p for p in written if _is_dicom(p)]
    others = [p for p in written if not _is_dicom(p)]
    assert len(dicom) == 7  # six instances in the spool, one SEG in the job's folder
    leaks = []
    for p in others:
        data = p.read_bytes().lower()
        leaks += [f"{p.relative_to(node.workdir)}: {n!r}" for n in needles if n.lower().encode() in data]
    return leaks, others


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def _storescp(stack: ExitStack, folder: Path) -> int:
    folder.mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen(["storescp", "-aet", "PACS", "-od", str(folder), str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(proc.wait)
    stack.callback(proc.kill)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if subprocess.run(["echoscu", "-aec", "PACS", "127.0.0.1", str(port)], env=ENV, capture_output=True,
                          check=False).returncode == 0:
            return port
        time.sleep(0.1)
    raise AssertionError("storescp did not answer C-ECHO")


def test_no_identifier_leaks_anywhere(tmp_path: Path, stack: ExitStack) -> None:
    pacs_dir = tmp_path / "pacs"
    pacs_port = _storescp(stack, pacs_dir)
    node = stack.enter_context(NodeProcess(
        tmp_path / "node",
        destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}],
        pipelines=[TEST_PIPELINE],
        extra={"routing": {"default_destinations": ["pacs"]}},
    ))
    study_uid, uids = _plant(tmp_path / "in")
    sent = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(node.dicom_port),
                           str(tmp_path / "in")], env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert sent.returncode == 0, sent.stderr

    rest: list[str] = [node.api("GET", "/studies").text, node.api("GET", f"/studies/{study_uid}").text,
                       node.api("POST", f"/studies/{study_uid}/complete").text]
    job = node.wait_job(study_uid, timeout=180)
    assert job["state"] == "done" and len(job["outputs"]) == 1
    exported = [p for p in pacs_dir.rglob("*") if p.is_file()]
    assert len(exported) == 1 and dcmread(exported[0]).PatientID == PLANTED["PatientID"]  # the SEG, with its patient
    seg = dcmread(job["outputs"][0], stop_before_pixels=True)
    uids += [str(seg.SOPInstanceUID), str(seg.SeriesInstanceUID)]
    rest += [node.api("GET", "/jobs").text, node.api("GET", f"/jobs/{job['id']}").text,
             node.api("GET", "/metrics").text, node.api("GET", "/health").text]
    needles = _needles()
    # While it runs (the database's WAL and shared-memory files exist), then once stopped.
    leaks, running = _leaks(node, needles)
    assert {p.name for p in running} >= {"node.db-wal", "node.db-shm"}
    assert node.stop() == 0
    more, others = _leaks(node, needles)
    leaks += more
    assert {p.name for p in others} >= {"node.log", "audit.jsonl", "node.db", "worker.log", "result.json"}
    for n, answer in enumerate(rest):
        leaks += [f"REST answer {n}: {x!r}" for x in needles if x.lower() in answer.lower()]
    assert leaks == []
    # The logs: no raw UID of the study, its series and instances or the SEG; well formed.
    for log in [node.log_path, *node.workdir.rglob("worker.log")]:
        assert log_problems(log.read_text(errors="backslashreplace"), uids) == [], log
    audit = (node.data_dir / "audit.jsonl").read_text()
    assert '"event": "object_sent"' in audit and not any(u in audit for u in uids)
