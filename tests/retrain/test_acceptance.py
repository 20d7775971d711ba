"""Acceptance of issue 19 with a real Orthanc and a real node.

Synthetic studies go to ``mrinode serve`` (tumour pipeline, the registry's served bundle),
whose SEG and SR land in Orthanc; a radiologist's corrections of two of them (a missed
region added, a false one removed) are stored as new SEG series from another AE and
manufacturer; ``mrinode retrain run-once`` harvests, de-identifies, fine-tunes, gates and
promotes. Checked: the training set holds exactly the corrected cases and no identifier;
the better candidate is promoted and a deliberately corrupted one refused; rollback
restores the previous version; the node's next study's SR names the promoted version.

Tiny training on purpose (a 12-feature Swin encoder on a 4 mm grid, CPU): the production
bundle has had 6 steps; the retraining candidate continues it for 30 steps on its data plus
the corrections. The corrupted candidate is taught that every crop is background
(``silent_subsets`` naming the only subset it sees), so it finds no tumour at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.retrain.helpers import (
    REPO,
    Study,
    corrected_seg,
    find_identifiers,
    synth_subject,
    tiny_finetune_toml,
)
from tests.support.dciodvfy import dciodvfy
from tests.support.node import NodeProcess
from tests.support.orthanc import OrthancServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

NAME = "retrain-tiny"


def _mrinode(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TCP_NODELAY="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "dicom_node", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout, check=False)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def _send(folder: Path, port: int, calling: str, called: str) -> None:
    from dicom_node.demo.scenario import send_with_storescu

    send_with_storescu(folder, port, calling=calling, called=called)


def _store_from_viewer(path: Path, port: int) -> None:
    """C-STORE one object from the reading station's AE (pynetdicom; storescu proposes no SEG context)."""
    from pynetdicom import AE

    ds = pydicom.dcmread(path)
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
        assert status.Status == 0x0000, status
    finally:
        assoc.release()


def _result(orthanc: OrthancServer, study_uid: str, modality: str, timeout: float = 120) -> bytes:
    """The node's result of ``modality`` in Orthanc (the newest series), once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sid = orthanc.find_study(study_uid)
        if sid:
            series = [s for s in orthanc.get(f"/studies/{sid}/series")
                      if s["MainDicomTags"].get("Modality") == modality]
            if series:
                return orthanc.instance_file(series[-1]["Instances"][0])
        time.sleep(0.5)
    raise AssertionError(f"no {modality} for the study in Orthanc within {timeout:.0f} s")


def _algorithm_version(sr: bytes) -> set[str]:
    import io

    text = pydicom.dcmread(io.BytesIO(sr))
    found: set[str] = set()

    def walk(ds: Any) -> None:
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.keyword in ("AlgorithmVersion", "TextValue", "CodeMeaning", "SoftwareVersions"):
                found.add(str(elem.value))
    walk(text)
    return found


def _run_study(node: NodeProcess, orthanc: OrthancServer, study: Study) -> tuple[bytes, bytes]:
    """The scanner stores the study in the PACS, which routes it to the node; SEG + SR come back."""
    _send(study.folder, orthanc.dicom_port, "SCANNER", "ORTHANC")
    _send(study.folder, node.dicom_port, "STORESCU", "MRINODE")
    assert node.api("POST", f"/studies/{study.study_uid}/complete").status_code == 200
    job = node.wait_job(study.study_uid, timeout=240)
    assert job["state"] == "done", job
    return _result(orthanc, study.study_uid, "SEG"), _result(orthanc, study.study_uid, "SR")


def test_corrections_retrain_gate_promote_rollback(tmp_path: Path, stack: ExitStack) -> None:
    from models.bundle import load_bundle
    from models.registry import ModelRegistry
    from training.finetune import train
    from training.ft_config import load_finetune_config

    # The production bundle: 6 steps from scratch, registered and served.
    base_cfg = load_finetune_config(tiny_finetune_toml(tmp_path / "base.toml", name=NAME, out=tmp_path / "base",
                                                       steps=6))
    base = train(base_cfg)["bundle"]
    registry_dir = tmp_path / "registry"
    registry = ModelRegistry(registry_dir)
    v1 = registry.promote(NAME, registry.register(Path(base), note="production").version, why="initial")
    served = registry.serving_path(NAME)
    card = load_bundle(served).card

    subject_a = synth_subject(tmp_path / "synth-a", 96101)
    subject_b = synth_subject(tmp_path / "synth-b", 96102)
    studies = {"A": Study(subject_a, tmp_path / "A", "A", coarse=True),
               "B": Study(subject_b, tmp_path / "B", "B", coarse=True),
               "C": Study(subject_a, tmp_path / "C", "C", coarse=True)}

    orthanc = stack.enter_context(OrthancServer(tmp_path / "orthanc"))
    node = stack.enter_context(NodeProcess(
        tmp_path / "node",
        destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
                       "port": orthanc.dicom_port}],
        pipelines=[{"name": "brain-tumour", "function": "dicom_node.pipelines.tumour:run", "enabled": True,
                    "options": {"model": str(served), "use_pixels": False, "overlap": 0.0}}],
        extra={"workers": {"timeout_s": 600.0}, "routing": {"default_destinations": ["pacs"]}},
    ))
    node_segs = {tag: _run_study(node, orthanc, s)[0] for tag, s in studies.items()}
    # The radiologist corrects A and B (not C) and stores the SEGs from the reading station.
    for tag in ("A", "B"):
        path, edits = corrected_seg(node_segs[tag], studies[tag], card, tmp_path / f"corr-{tag}")
        assert edits["added"] + edits["removed"] > 0, edits
        _store_from_viewer(path, orthanc.dicom_port)

    val_seeds = 97000
    retrain = tmp_path / "retrain.toml"
    retrain.write_text(f"""
finetune_config = "{tiny_finetune_toml(tmp_path / 'good.toml', name=NAME, out=tmp_path / 'good', steps=30)}"
registry_dir = "{registry_dir}"
metric = "all/dice_WT"
min_improvement = 0.01
region_tolerance = 0.02
[harvest]
url = "{orthanc.url}"
user = "{orthanc.user}"
password = "{orthanc.password}"
out_dir = "{tmp_path / 'training-set'}"
unlabelled = true
[validation]
synth = {{ subjects = 2, seed = {val_seeds}, voxel_mm = 4.0, tumour = true }}
out_dir = "{tmp_path / 'validation'}"
""")
    good = _mrinode("retrain", "run-once", "--config", str(retrain), "--json")
    assert good.returncode == 0, good.stderr[-3000:]
    record = json.loads(good.stdout)
    assert record["decision"] == "promoted", json.dumps(record, indent=1)[:3000]
    new, old = record["candidate_metrics"], record["previous_metrics"]
    assert new["all/dice_WT"] >= old["all/dice_WT"] + 0.01
    assert all(new[k] >= old[k] - 0.02 for k in ("all/dice_WT", "all/dice_TC", "all/dice_ET"))
    v2 = registry.promoted(NAME)
    assert v2 is not None and v2.version == record["candidate_version"] != v1.version
    assert load_bundle(served).card.version == v2.version

    # The training set: exactly the corrected studies, under keyed pseudonyms, hashed, with provenance.
    tset = tmp_path / "training-set"
    manifest = json.loads((tset / "current" / "manifest.json").read_text())
    key = (tset / ".pseudonym-key").read_bytes()
    pseudonym = {tag: "case-" + hmac.new(key, f"case:{s.study_uid}".encode(), hashlib.sha256).hexdigest()[:16]
                 for tag, s in studies.items()}
    assert sorted(s["id"] for s in manifest["subjects"]) == sorted([pseudonym["A"], pseudonym["B"]])
    for subject in manifest["subjects"]:
        assert set(subject["sequences"]) == {"T1", "T1C", "T2", "FLAIR"}
        assert subject["provenance"]["manufacturer"] == "ViewerWorks"
        for name, digest in subject["sha256"].items():
            assert hashlib.sha256((Path(subject["labels"]).parent / name).read_bytes()).hexdigest() == digest
    assert record["data"]["harvested_cases"] == 2 and record["data"]["new_cases"] == 2
    planted = {v for s in studies.values() for v in s.identifiers.values()} | {u for s in studies.values()
                                                                                 for u in s.uids}
    # Studies without a correction (C) went, de-identified, into the unlabelled set that pretraining reads.
    from training.pretrain.sources import collect_subjects

    unlabelled = tmp_path / "training-set-unlabelled"
    pretrain = collect_subjects([unlabelled / "current" / "manifest.json"])
    key_u = (unlabelled / ".pseudonym-key").read_bytes()
    c_id = "case-" + hmac.new(key_u, f"case:{orthanc.find_study(studies['C'].study_uid)}".encode(),
                              hashlib.sha256).hexdigest()[:16]
    assert [s.subject_id for s in pretrain] == [c_id] and set(pretrain[0].images) == {"T1", "T1C", "T2", "FLAIR"}
    hits = find_identifiers(tset, planted) + find_identifiers(registry_dir, planted)
    hits += find_identifiers(unlabelled, planted)
    hits += [f"run-once output: {n}" for n in planted if n in good.stdout + good.stderr]
    assert hits == []
    for subject in manifest["subjects"]:
        kept = Path(subject["labels"]).parent / "correction-seg.dcm"  # the corrected SEG, de-identified
        assert pydicom.dcmread(kept).PatientIdentityRemoved == "YES"
        assert dciodvfy(kept).errors == []

    # The node runs the promoted version on the next study, without a restart.
    study_d = Study(subject_b, tmp_path / "D", "D", coarse=True)
    _, sr = _run_study(node, orthanc, study_d)
    assert v2.version in _algorithm_version(sr)

    # A deliberately corrupted fine-tune (taught that everything is background) is refused.
    bad_ft = tiny_finetune_toml(tmp_path / "bad.toml", name=NAME, out=tmp_path / "bad", steps=30, lr=1e-2,
                                sequence_dropout=0.0, extra_train='silent_subsets = ["T1+T1C+T2+FLAIR"]')
    worse = tmp_path / "worse.toml"
    worse.write_text(retrain.read_text().replace(str(tmp_path / "good.toml"), str(bad_ft))
                     .replace("min_improvement", "retrain_without_new_data = true\nmin_improvement")
                     .replace("unlabelled = true", "unlabelled = false"))
    bad = _mrinode("retrain", "run-once", "--config", str(worse), "--json")
    assert bad.returncode == 0, bad.stderr[-3000:]
    refused = json.loads(bad.stdout)
    assert refused["decision"] == "refused", refused
    assert refused["candidate_metrics"]["all/dice_WT"] < refused["previous_metrics"]["all/dice_WT"]
    assert refused["data"]["harvest"]["skipped_known"] == 2 and refused["data"]["new_cases"] == 0
    assert registry.promoted(NAME).version == v2.version  # type: ignore[union-attr]
    metrics = node.api("GET", "/metrics").text
    assert f'mrinode_retrain_last_decision{{decision="refused",model="{NAME}"}} 1.0' in metrics, metrics[-2000:]
    assert "mrinode_retrain_last_metric{" in metrics and "mrinode_retrain_last_run_timestamp_seconds{" in metrics
    hist = _mrinode("retrain", "history", "--config", str(retrain))
    assert hist.returncode == 0 and "refused" in hist.stdout and "promoted" in hist.stdout

    # Rollback restores the previous version: the served folder holds its card and weights again.
    rb = _mrinode("models", "rollback", NAME, "--registry", str(registry_dir))
    assert rb.returncode == 0, rb.stderr
    assert registry.promoted(NAME).version == v1.version  # type: ignore[union-attr]
    assert load_bundle(served).card.version == v1.version
    assert (served / "weights.safetensors").read_bytes() == (registry_dir / v1.path / "weights.safetensors").read_bytes()
