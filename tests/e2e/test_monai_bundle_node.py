"""A MONAI Bundle configured beside the native demo bundle, end to end through a real node.

``mrinode serve`` with two pipelines: the demo tumour model (native bundle, FLAIR required by
the configuration) and a MONAI Bundle (Model Zoo layout, TorchScript ``model.ts``, built by
:mod:`tests.models.monai_bundle_factory`) that needs T2 and has its own label code, colour
and tracking id. Synthetic studies go in by dcmtk ``storescu``; each study gets the pipelines
its sequences allow, each SEG carries the codes and colours of its own card, dciodvfy finds
no error, and each model is loaded once for both studies (``mrinode_model_loads_total``).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest

from models.bundle import Card
from tests.models.monai_bundle_factory import make_lesion_bundle
from tests.support.dciodvfy import dciodvfy
from tests.support.node import NodeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ENV = dict(os.environ, TCP_NODELAY="1")

T2_LABEL: dict[str, Any] = {
    "value": 1,
    "name": "T2 hyperintensity",
    "category": ["49755003", "SCT", "Morphologically Altered Structure"],
    "type": ["52988006", "SCT", "Lesion"],
    "colour": [0, 200, 255],
    "tracking_id": "T2-HI",
    "anatomic_region": ["12738006", "SCT", "Brain"],
}
TUMOUR = {"name": "brain-tumour", "function": "dicom_node.pipelines.tumour:run", "enabled": True,
          "required_sequences": ["FLAIR"], "optional_sequences": ["T1", "T1C", "T2"],
          "options": {"model": "brain-tumour-demo", "use_pixels": False}}


def _study(out: Path, seed: int, sequences: list[str]) -> tuple[Path, str]:
    import torch

    from training.synth import generate_subject, write_subject

    torch.set_num_threads(1)
    folder = write_subject(generate_subject(seed, voxel_mm=3.0, tumour=True, sequences=sequences), out,
                           dicom=True, nifti=False) / "dicom"
    uid = str(pydicom.dcmread(next(folder.rglob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)
    return folder, uid


def _send_and_run(node: NodeProcess, folder: Path, study_uid: str) -> list[Path]:
    r = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "+r", "127.0.0.1", str(node.dicom_port), str(folder)],
                       env=ENV, capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    assert node.api("POST", f"/studies/{study_uid}/complete").json()["queued"]
    job = node.wait_job(study_uid, states=("exporting", "done", "failed"), timeout=300)
    assert job["outputs"], f"{job}\n{node.log_tail()}"
    return [Path(p) for p in job["outputs"]]


def _metric(node: NodeProcess, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in node.api("GET", "/metrics").text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name and ",".join(sorted((m.group(2) or "").split(","))) == want:
            return float(m.group(3))
    return 0.0


def _by_pipeline(outputs: list[Path]) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {}
    for p in outputs:
        got.setdefault(p.parent.name, []).append(p.name)
    return {k: sorted(v) for k, v in got.items()}


def _check_seg_follows_card(seg_path: Path, card: Card) -> None:
    import highdicom as hd

    seg = pydicom.dcmread(seg_path)
    labels = {lab.name: lab for lab in card.labels}
    assert seg.SegmentSequence, seg_path
    for item in seg.SegmentSequence:
        lab = labels[str(item.SegmentLabel)]  # a segment of this card, no other
        code = item.SegmentedPropertyTypeCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator) == (lab.type[0], lab.type[1])
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == lab.category[0]
        assert list(item.RecommendedDisplayCIELabValue) == list(hd.color.CIELabColor.from_rgb(*lab.colour).value)
        if lab.tracking_id:
            assert item.TrackingID == lab.tracking_id
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == card.algorithm_fields()["name"]


def test_a_monai_bundle_beside_the_demo_each_study_gets_what_its_sequences_allow(tmp_path: Path) -> None:
    from models.registry import load_model

    bundles = tmp_path / "bundles"
    make_lesion_bundle(bundles / "t2-lesion", "T2", T2_LABEL, name="t2-lesion")
    lesion = {"name": "t2-lesion", "function": "dicom_node.pipelines.segmentation:run", "enabled": True,
              "options": {"model": "t2-lesion", "models_dir": str(bundles), "use_pixels": False}}
    both, both_uid = _study(tmp_path / "s1", 9330, ["T2", "FLAIR"])
    t2_only, t2_uid = _study(tmp_path / "s2", 9331, ["T2"])
    cards = {"brain-tumour": load_model("brain-tumour-demo", device="cpu").card,
             "t2-lesion": load_model(bundles / "t2-lesion", device="cpu").card}

    with NodeProcess(tmp_path / "node", pipelines=[TUMOUR, lesion]) as node:
        first = _send_and_run(node, both, both_uid)
        second = _send_and_run(node, t2_only, t2_uid)
        loads = {m: _metric(node, "mrinode_model_loads_total", model=m, version=cards[p].version)
                 for p, m in (("brain-tumour", "brain-tumour-demo"), ("t2-lesion", "t2-lesion"))}
        log = node.log_tail(200)

    # T2 + FLAIR: both models; T2 alone: the MONAI model only (the demo is configured to need FLAIR)
    assert _by_pipeline(first) == {"brain-tumour": ["seg.dcm", "sr.dcm"], "t2-lesion": ["seg.dcm", "sr.dcm"]}, log
    assert _by_pipeline(second).get("t2-lesion") == ["seg.dcm", "sr.dcm"], log
    assert "seg.dcm" not in _by_pipeline(second).get("brain-tumour", []), log
    for p in first + second:
        assert dciodvfy(p).errors == [], dciodvfy(p).output
    for p in first + second:
        if p.name == "seg.dcm":
            _check_seg_follows_card(p, cards[p.parent.name])
    # warm: each model loaded once in the worker for both studies
    assert loads == {"brain-tumour-demo": 1, "t2-lesion": 1}, loads


def test_an_invalid_monai_bundle_is_refused_at_start_up_naming_file_and_key(tmp_path: Path) -> None:
    import json

    bundles = tmp_path / "bundles"
    folder = make_lesion_bundle(bundles / "t2-lesion", "T2", T2_LABEL, name="t2-lesion")
    side = json.loads((folder / "configs" / "mrinode.json").read_text())
    side["channels"] = ["T2W"]  # not a sequence label
    (folder / "configs" / "mrinode.json").write_text(json.dumps(side))
    lesion = {"name": "t2-lesion", "function": "dicom_node.pipelines.segmentation:run", "enabled": True,
              "options": {"model": str(folder)}}
    node = NodeProcess(tmp_path / "node", pipelines=[lesion])
    try:
        with pytest.raises(RuntimeError, match=r"exited") as err:
            node.start(timeout=60)
    finally:
        node.kill9()
    message = str(err.value)
    assert "configs/mrinode.json" in message and "'channels[0]'" in message and "'T2W'" in message, message
