"""Synthetic MRI generator benchmark: seconds and peak memory per subject.

``python -m bench synth [--quick]`` prints a table: template loading (once per process;
for the CAT12 source it includes the MNI152 build whose head and grid it shares),
``generate_subject`` with 4 sequences (T1, T1C, T2, FLAIR) at 1 mm for each anatomy
source and at 2 mm, and writing the NIfTI files and the DICOM study. Each configuration runs in a fresh child process
so that its peak RSS is its own. The anchor, measured in the same run, is one
``scipy.ndimage.gaussian_filter`` (sigma 1) of a float32 volume of the 1 mm grid
(197 x 233 x 189); generation time is also given as a multiple of it, and as process
CPU seconds. Target: <= 5 s per
4-sequence subject at 1 mm on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["main"]

_CHILD = r"""
import json, resource, statistics, sys, tempfile, time
import torch
torch.set_num_threads(2)
import numpy as np
from scipy import ndimage as ndi
cfg = json.loads(sys.argv[1])
out = {}
vol = np.random.default_rng(0).random((197, 233, 189), dtype=np.float32)
t = time.perf_counter(); ndi.gaussian_filter(vol, 1.0); out["anchor_s"] = time.perf_counter() - t
del vol
from training.synth import generate_subject, write_subject
from training.synth.templates import load_templates
t = time.perf_counter(); load_templates(cfg["voxel_mm"], cfg["anatomy"]); out["templates_s"] = time.perf_counter() - t
times, cpu = [], []
subject = None
for i in range(cfg["n"]):
    t, c = time.perf_counter(), time.process_time()
    subject = generate_subject(100 + i, voxel_mm=cfg["voxel_mm"], tumour=True, vendor="siemens", anatomy=cfg["anatomy"])
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
out["generate_s"] = statistics.median(times)
out["generate_cpu_s"] = statistics.median(cpu)
if cfg.get("write"):
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter(); write_subject(subject, tmp, nifti=True); out["nifti_s"] = time.perf_counter() - t
        t = time.perf_counter(); write_subject(subject, tmp, nifti=False, dicom=True); out["dicom_s"] = time.perf_counter() - t
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps(out))
"""


def _run(cfg: dict[str, object]) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed for {cfg}: {proc.stderr.strip().splitlines()[-1:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Print the synthetic-data benchmark table.

    Parameters
    ----------
    argv : sequence of str, optional
        ``[--quick]``: one subject per configuration instead of three.

    Returns
    -------
    int
        0 on success.
    """
    parser = argparse.ArgumentParser(prog="python -m bench synth", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one subject per configuration")
    args = parser.parse_args(argv)
    n = 1 if args.quick else 3
    rows = []
    for voxel, anatomy, write in ((1.0, "mni152", True), (1.0, "cat12", False), (2.0, "mni152", False)):
        r = _run({"voxel_mm": voxel, "anatomy": anatomy, "n": n, "write": write})
        rows.append((voxel, anatomy, r))
    print(f"{'grid':>6} {'anatomy':>8} {'anchor s':>9} {'templates s':>12} {'generate s':>11} {'CPU s':>6} {'x anchor':>9} "
          f"{'NIfTI s':>8} {'DICOM s':>8} {'peak RSS MB':>12}")
    for voxel, anatomy, r in rows:
        nifti = f"{r['nifti_s']:8.2f}" if "nifti_s" in r else f"{'-':>8}"
        dicom = f"{r['dicom_s']:8.2f}" if "dicom_s" in r else f"{'-':>8}"
        print(f"{voxel:>4.1f}mm {anatomy:>8} {r['anchor_s']:9.3f} {r['templates_s']:12.2f} {r['generate_s']:11.2f} "
              f"{r['generate_cpu_s']:6.2f} {r['generate_s'] / r['anchor_s']:9.1f} {nifti} {dicom} {r['peak_rss_mb']:12.0f}")
    print(f"subjects per configuration: {n} (median); 4 sequences T1, T1C, T2, FLAIR with a tumour; "
          "target <= 5 s per subject at 1 mm on 2 cores. CPU s is process CPU time (both threads), "
          "which other load on the machine inflates less than wall time.")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
