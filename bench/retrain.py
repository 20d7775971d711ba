"""Retraining from corrections: harvest + conversion seconds per corrected study, and one tiny
retraining run end to end, with anchors measured in the same run.

Per study, against a real Orthanc (``orthanc-api-client``): the harvest of one correction
(download of the study's MR series and both SEGs, PS3.15 de-identification in memory,
conversion to NIfTI on the corrected series' grid, hashing, a new training-set version)
next to two anchors on the same files: reading them from local disk with ``pydicom.dcmread``,
and downloading them through the same REST client without doing anything else.

Then one ``run_once`` of a tiny model (12-feature Swin encoder, 4 mm grid, CPU): harvest (no
new corrections: the cases are taken already), fine-tune, score the old and the new bundle on
two held-out synthetic subjects, gate, register and record; its stages are printed.

The node's SEG is stood in for by the true label map with one region dropped (written by the
node's SEG writer, Manufacturer ``mrinode``), the correction by the true map (Manufacturer
``ViewerWorks``); running the node itself is ``tests/retrain/test_acceptance.py``'s job.

Runs inside a private network namespace (``tests/netns.sh``) when it can (root).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TCP_NODELAY="1")

__all__ = ["main"]


def _seg(study: Any, card: Any, *, node: bool) -> bytes:
    import numpy as np
    import pydicom

    from dicom_node.io.codes import algorithm_from_card, segments_from_card
    from dicom_node.io.reader import read_series
    from dicom_node.io.seg import write_seg
    from tests.retrain.helpers import _truth_on

    t1 = sorted((study.folder / "01_T1").glob("*.dcm"))
    ref = read_series(t1)[0]
    labels = _truth_on(ref, study.labels)
    if node:  # the "model" missed the enhancing part
        labels = np.where(labels == 3, 0, labels).astype(np.int16)
    ds = write_seg(labels, ref, segments_from_card(card), algorithm_from_card(card),
                   manufacturer="mrinode" if node else "ViewerWorks",
                   series_number=900 if node else 950,
                   series_description="mrinode segmentation" if node else "corrected by radiologist")
    if not node:
        for item in ds.SegmentSequence:
            item.SegmentAlgorithmType = "MANUAL"
            for kw in ("SegmentationAlgorithmIdentificationSequence", "SegmentAlgorithmName"):
                if kw in item:
                    delattr(item, kw)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _run(quick: bool) -> None:
    import pydicom

    from models.bundle import load_bundle
    from models.registry import ModelRegistry
    from tests.retrain.helpers import Study, synth_subject, tiny_finetune_toml
    from tests.support.orthanc import OrthancServer
    from training.finetune import train
    from training.ft_config import load_finetune_config
    from training.harvest import HarvestConfig, harvest
    from training.retrain import load_retrain_config, run_once

    n_studies = 1 if quick else 2
    steps = 10 if quick else 30
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        base = train(load_finetune_config(tiny_finetune_toml(work / "base.toml", name="bench-tiny", out=work / "base",
                                                              steps=6)))["bundle"]
        base_s = time.perf_counter() - t
        registry = ModelRegistry(work / "registry")
        registry.promote("bench-tiny", registry.register(Path(base)).version)
        card = load_bundle(registry.serving_path("bench-tiny")).card
        studies = [Study(synth_subject(work / f"synth{i}", 96200 + i), work / f"study{i}", str(i))
                   for i in range(n_studies)]
        rows = []
        with OrthancServer(work / "orthanc") as orthanc:
            for study in studies:
                for path in sorted(study.folder.rglob("*.dcm")):
                    orthanc.api.upload_file(str(path))
                orthanc.api.upload(_seg(study, card, node=True))
                time.sleep(1.1)  # the correction is made later than the node's result
                orthanc.api.upload(_seg(study, card, node=False))
            cfg = HarvestConfig(url=orthanc.url, user=orthanc.user, password=orthanc.password,
                                out_dir=work / "training-set")
            t = time.perf_counter()
            report = harvest(cfg, card)
            harvest_s = time.perf_counter() - t
            for study, per in zip(studies, report.seconds_per_study, strict=False):
                files = sorted(study.folder.rglob("*.dcm"))
                t = time.perf_counter()
                for p in files:
                    _ = pydicom.dcmread(p).pixel_array
                read_s = time.perf_counter() - t
                sid = orthanc.find_study(study.study_uid)
                t = time.perf_counter()
                for inst in orthanc.api.studies.get_instances_ids(sid):
                    _ = pydicom.dcmread(io.BytesIO(orthanc.api.instances.get_file(inst))).pixel_array
                download_s = time.perf_counter() - t
                rows.append((len(files), per, read_s, download_s))
            retrain = work / "retrain.toml"
            retrain.write_text(f"""
finetune_config = "{tiny_finetune_toml(work / 'good.toml', name='bench-tiny', out=work / 'good', steps=steps)}"
registry_dir = "{work / 'registry'}"
[harvest]
url = "{orthanc.url}"
user = "{orthanc.user}"
password = "{orthanc.password}"
out_dir = "{work / 'training-set'}"
[validation]
synth = {{ subjects = 2, seed = 97000, voxel_mm = 4.0, tumour = true }}
out_dir = "{work / 'validation'}"
""")
            t = time.perf_counter()
            outcome = run_once(load_retrain_config(retrain))
            run_s = time.perf_counter() - t
    print(f"Harvest of corrected studies ({n_studies}; real Orthanc, orthanc-api-client; 4 MR series per study)")
    print("harvest s = download + PS3.15 de-identification + conversion of one correction (NIfTI written after);")
    print("anchors on the same files: pydicom read + pixel decode from local disk, and REST download + decode alone")
    print(f"{'study':<6} {'files':>6} {'harvest s':>10} {'pydicom read s':>15} {'REST download s':>16} "
          f"{'vs read':>8} {'vs download':>12}")
    for i, (n, per, read_s, download_s) in enumerate(rows):
        print(f"{i:<6} {n:>6} {per:>10.2f} {read_s:>15.2f} {download_s:>16.2f} {per / read_s:>7.1f}x "
              f"{per / download_s:>11.1f}x")
    print(f"whole harvest (find SEGs, convert, write NIfTI + hashes + version {report.dataset_version}): "
          f"{harvest_s:.2f} s; {len(report.added)} cases added")
    print()
    print(f"One tiny retraining run end to end ({steps} fine-tuning steps, CPU, "
          f"{outcome.data.get('train_subjects')} training subjects, {outcome.data.get('validation_subjects')} "
          f"validation subjects): {run_s:.1f} s, decision {outcome.decision}")
    for stage, sec in outcome.data.get("stage_seconds", {}).items():
        print(f"    {stage:<16} {sec:8.1f} s")
    print(f"    anchor: the production bundle's own 6-step training in this run {base_s:.1f} s")
    print(f"    decision: {outcome.reason}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the retraining benchmark and print its tables.

    Parameters
    ----------
    argv : sequence of str, optional
        ``--quick`` for one study and 10 fine-tuning steps.

    Returns
    -------
    int
        0 on success.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.retrain", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not Path("/usr/sbin/Orthanc").exists():
        print("bench.retrain: /usr/sbin/Orthanc is not installed (run `make setup`).", file=sys.stderr)
        return 1
    if os.environ.get("MRINODE_IN_NETNS") != "1" and os.geteuid() == 0:
        passed = list(argv) if argv is not None else sys.argv[1:]
        cmd = [str(ROOT / "tests" / "netns.sh"), sys.executable, "-m", "bench.retrain", *passed]
        return subprocess.run(cmd, cwd=ROOT, env=ENV, check=False).returncode
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    _run(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
