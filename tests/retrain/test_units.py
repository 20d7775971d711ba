"""Retraining parts without a PACS: the gate, the registry's served link and rollback, de-identification
of a SEG with its series, the versioned training set, config errors and the persistent schedule."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from models.registry import ModelRegistry, RegistryError
from training.retrain import RetrainConfig, decide, load_retrain_config, open_scheduler

REGIONS = ("all/dice_WT", "all/dice_TC", "all/dice_ET")


def _cfg(tmp_path: Path, **kw: object) -> RetrainConfig:
    return RetrainConfig(finetune_config=tmp_path / "ft.toml", registry_dir=tmp_path / "reg", **kw)  # type: ignore[arg-type]


def _m(wt: float, tc: float, et: float) -> dict[str, float]:
    return dict(zip(REGIONS, (wt, tc, et), strict=True))


def test_gate_promotes_only_better_on_target_and_no_worse_anywhere(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, min_improvement=0.02)
    ok, why = decide(cfg, _m(0.60, 0.40, 0.30), _m(0.50, 0.40, 0.30))
    assert ok, why
    ok, why = decide(cfg, _m(0.60, 0.39, 0.30), _m(0.50, 0.40, 0.30))
    assert not ok and "all/dice_TC" in why
    ok, why = decide(cfg, _m(0.51, 0.40, 0.30), _m(0.50, 0.40, 0.30))
    assert not ok and "margin" in why
    ok, why = decide(cfg, _m(math.nan, 0.4, 0.3), _m(0.5, 0.4, 0.3))
    assert not ok
    assert decide(cfg, _m(0.1, 0.0, 0.0), None)[0]
    assert decide(_cfg(tmp_path, region_tolerance=0.02), _m(0.6, 0.39, 0.3), _m(0.5, 0.4, 0.3))[0]


def _bundle(tmp: Path, name: str, tag: str) -> Path:
    folder = tmp / f"{name}-{tag}"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"name": name, "version": "1.0", "metrics": {}}))
    (folder / "weights.safetensors").write_bytes(tag.encode())
    return folder


def test_promotion_serves_through_a_link_and_rollback_restores_the_previous(tmp_path: Path) -> None:
    from dicom_node.cli import main

    reg = ModelRegistry(tmp_path / "reg")
    a = reg.register(_bundle(tmp_path, "m", "a"))
    b = reg.register(_bundle(tmp_path, "m", "b"))
    with pytest.raises(RegistryError, match="no promoted version"):
        reg.rollback("m")
    reg.promote("m", a.version)
    with pytest.raises(RegistryError, match="no earlier promoted version"):
        reg.rollback("m")
    reg.promote("m", b.version)
    served = reg.serving_path("m")
    assert (served / "weights.safetensors").read_bytes() == b"b"
    assert json.loads((served / "card.json").read_text())["version"] == b.version  # the SR names it
    assert main(["models", "rollback", "m", "--registry", str(tmp_path / "reg")]) == 0
    assert reg.promoted("m").version == a.version  # type: ignore[union-attr]
    assert (served / "weights.safetensors").read_bytes() == b"a"
    assert [h["version"] for h in reg.history("m")] == [a.version, b.version, a.version]
    assert main(["models", "rollback", "m", "--registry", str(tmp_path / "nowhere")]) == 2


def _seg_and_series(tmp_path: Path) -> tuple[list[pydicom.FileDataset], pydicom.FileDataset, set[str]]:
    from dicom_node.io.codes import AlgorithmSpec, SegmentSpec
    from dicom_node.io.reader import read_series
    from dicom_node.io.seg import write_seg
    from tests.support.mrfiles import write_mr_series

    _, paths = write_mr_series(tmp_path / "mr", 6, size=16)
    planted = {"PatientName": "Planted^Person", "PatientID": "PLANTED-ID-1", "InstitutionName": "Planted Clinic"}
    for p in paths:
        ds = pydicom.dcmread(p)
        for k, v in planted.items():
            setattr(ds, k, v)
        ds.save_as(p, enforce_file_format=True)
    vol = read_series(paths)[0]
    labels = np.zeros(vol.data.shape, dtype=np.uint8)
    labels[4:9, 4:9, 2:4] = 1
    from pydicom.sr.coding import Code

    spec = SegmentSpec(label_value=1, label="Lesion", category=Code("49755003", "SCT", "Morphologically Altered Structure"),
                       type=Code("108369006", "SCT", "Neoplasm"), rgb=(255, 0, 0))
    seg = write_seg(labels, vol, [spec], AlgorithmSpec(name="test", version="1"), manufacturer="ViewerWorks")
    seg = pydicom.dcmread(io.BytesIO(_bytes(seg)))
    series = [pydicom.dcmread(p) for p in paths]
    uids = {str(ds.SOPInstanceUID) for ds in series} | {str(series[0].SeriesInstanceUID), str(seg.SOPInstanceUID),
                                                       str(series[0].StudyInstanceUID)}
    return series, seg, set(planted.values()) | uids


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_deidentified_seg_still_fits_its_deidentified_series_and_holds_no_identifier(tmp_path: Path) -> None:
    from dicom_node.io.reader import read_series
    from dicom_node.io.seg import read_seg_labels
    from training.harvest.deid import Deidentifier

    series, seg, needles = _seg_and_series(tmp_path)
    deid = Deidentifier()
    out = tmp_path / "deid"
    out.mkdir()
    paths = []
    for i, ds in enumerate(series):
        deid(ds)
        paths.append(out / f"{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    deid(seg)
    blobs = [p.read_bytes() for p in paths] + [_bytes(seg)]
    leaks = sorted({n for n in needles for b in blobs if n.encode() in b})
    assert leaks == []
    labels = read_seg_labels(seg, read_series(paths)[0])
    assert int(labels.sum()) == 5 * 5 * 2
    assert seg.PatientIdentityRemoved == "YES"


def test_training_set_versions_dedupe_and_replace(tmp_path: Path) -> None:
    from training.harvest.convert import CaseArrays
    from training.harvest.dataset import TrainingSet

    def case(value: int) -> CaseArrays:
        labels = np.zeros((8, 8, 8), dtype=np.int16)
        labels[2:4, 2:4, 2:4] = value
        return CaseArrays(images={"T1": np.ones((8, 8, 8), np.float32)}, labels=labels, affine=np.eye(4))

    ts = TrainingSet(tmp_path / "set")
    a = ts.pseudonym("case", "1.2.3.4")
    assert "1.2.3.4" not in a and a == ts.pseudonym("case", "1.2.3.4")
    r1 = ts.commit([(a, case(1), {"x": 1})], source="test")
    assert (r1.version, r1.added) == (1, [a])
    r2 = ts.commit([(a, case(1), {"x": 1})], source="test")
    assert (r2.version, r2.duplicates) == (1, [a])  # the same correction again: no new version
    r3 = ts.commit([(a, case(2), {"x": 2})], source="test")
    assert (r3.version, r3.replaced) == (2, [a])  # a newer correction of the same study replaces it
    subjects = ts.subjects()
    assert len(subjects) == 1 and subjects[0]["provenance"] == {"x": 2}
    assert len(ts.subjects(1)) == 1 and ts.subjects(1)[0]["content_key"] != subjects[0]["content_key"]
    assert (tmp_path / "set" / ".pseudonym-key").stat().st_mode & 0o077 == 0


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('finetune_config = "x.toml"\n[harvest]\nurl = "http://127.0.0.1:1"\nnode_manufacturer = ["x"]\n')
    with pytest.raises(ValueError, match="node_manufacturer"):
        load_retrain_config(path)
    path.write_text('finetune_config = "x.toml"\n[harvest]\nout_dir = "set"\n')
    with pytest.raises(ValueError, match="url"):
        load_retrain_config(path)
    path.write_text('finetune_config = "x.toml"\nmisfire_grace_s = 0\n')
    with pytest.raises(ValueError, match="misfire_grace_s"):
        load_retrain_config(path)


def test_schedule_survives_a_restart_in_its_job_store(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('finetune_config = "x.toml"\nregistry_dir = "reg"\nschedule = "30 3 * * *"\n')
    cfg = load_retrain_config(path)
    first = open_scheduler(cfg, path)
    job = first.get_job("retrain")
    assert job is not None and job.misfire_grace_time == 3600 and job.max_instances == 1
    when = job.next_run_time
    first.shutdown(wait=False)
    assert (tmp_path / "reg" / "retrain-jobs.sqlite").is_file()
    again = open_scheduler(cfg, path)
    kept = again.get_job("retrain")
    assert kept is not None and kept.next_run_time == when and kept.args == (str(path.resolve()),)
    again.shutdown(wait=False)
    path.write_text('finetune_config = "x.toml"\nregistry_dir = "reg"\nschedule = "0 4 * * *"\n')
    third = open_scheduler(load_retrain_config(path), path)
    assert third.get_job("retrain").next_run_time.hour == 4  # type: ignore[union-attr]
    third.shutdown(wait=False)


def test_one_run_at_a_time_across_processes(tmp_path: Path) -> None:
    from training.retrain import _run_lock, history, run_once

    cfg = _cfg(tmp_path)
    with _run_lock(cfg.registry_dir), pytest.raises(RuntimeError, match="one run at a time"):
        run_once(cfg)  # a scheduled run holds the lock: run-once is refused, nothing recorded
    assert history(cfg) == []
    with pytest.raises(FileNotFoundError):
        run_once(cfg)  # the lock is free again; this run fails on its missing config, and says so in the history
    assert [r["decision"] for r in history(cfg)] == ["failed"]


@pytest.mark.parametrize(("grace", "late_s", "runs"), [(3600, 30, 1), (5, 60, 0)])
def test_a_fire_time_missed_while_down_runs_within_the_grace_only(tmp_path: Path, grace: int, late_s: int,
                                                                  runs: int) -> None:
    import time
    from datetime import UTC, datetime, timedelta

    from training.retrain import history

    path = tmp_path / "r.toml"
    path.write_text(f'finetune_config = "missing.toml"\nregistry_dir = "reg"\nschedule = "0 3 * * *"\n'
                    f"misfire_grace_s = {grace}\n")
    cfg = load_retrain_config(path)
    down = open_scheduler(cfg, path)  # paused: it never runs the job; it stands for a process that died
    down.modify_job("retrain", next_run_time=datetime.now(UTC) - timedelta(seconds=late_s))
    up = open_scheduler(cfg, path)  # the restart, on the same job store
    up.resume()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(history(cfg)) < runs:
        time.sleep(0.2)
    time.sleep(0.5)
    up.shutdown(wait=True)
    down.shutdown(wait=False)
    # The run that fired failed on its missing fine-tuning config, and says so in the history.
    assert [r["decision"] for r in history(cfg)] == ["failed"] * runs
