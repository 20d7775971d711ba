"""Sequence identification benchmark: series per second for a 10-series study on CPU.

``python -m bench.identify [--quick]`` writes one synthetic 10-series MR study (the
synthetic engine's nine series plus a repeated T2 under a new series UID), then times
``identify_study`` with headers only and with pixels (classifier loaded once, warm), and
two anchors measured in the same run: reading every file's header with pydicom
(``stop_before_pixels``), and reading every file with its pixel data decoded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _make_study(root: Path, voxel_mm: float) -> Path:
    import pydicom
    from pydicom.uid import generate_uid

    from training.synth import SYNTH_SEQUENCES, generate_subject, write_subject

    subject = generate_subject(4242, sequences=SYNTH_SEQUENCES, voxel_mm=voxel_mm, vendor="siemens")
    study = write_subject(subject, root, dicom=True, nifti=False) / "dicom"
    t2 = next(p for p in sorted(study.iterdir()) if p.name.endswith("_T2"))
    repeat = study / "10_T2_repeat"
    repeat.mkdir()
    uid = generate_uid(entropy_srcs=["bench-identify-repeat"])
    for f in sorted(t2.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[uid, f.name])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber = 10
        ds.save_as(repeat / f.name)
    return study


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Parameters
    ----------
    argv : sequence of str, optional
        ``--quick``: one repeat and a 3 mm generator grid.

    Returns
    -------
    int
        0.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.identify", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repeat (a smoke run)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import pydicom
    import torch

    from dicom_node.identify import identify_study
    from dicom_node.io.grouping import iter_files
    from models.seqclf import load_sequence_classifier

    torch.set_num_threads(2)
    repeat = 1 if args.quick else 3
    tmp = Path(tempfile.mkdtemp(prefix="bench-identify-"))
    try:
        study = _make_study(tmp, 3.0 if args.quick else 2.0)
        files = iter_files(study)
        classifier = load_sequence_classifier()

        def headers_anchor() -> int:
            return len([pydicom.dcmread(f, stop_before_pixels=True) for f in files])

        def pixels_anchor() -> int:
            return len([pydicom.dcmread(f).pixel_array for f in files])

        t_h_anchor, _ = _best_of(headers_anchor, repeat)
        t_p_anchor, _ = _best_of(pixels_anchor, repeat)
        t_h, rows = _best_of(lambda: identify_study(study, use_pixels=False), repeat)
        t_p, rows_p = _best_of(lambda: identify_study(study, use_pixels=True, classifier=classifier), repeat)
        n = len(rows)
        print(f"\nSequence identification, {n} series, {len(files)} files, CPU, torch threads 2, best of {repeat}\n")
        print(f"{'what':<44}{'seconds':>9}{'series/s':>10}{'x anchor':>10}")
        print("-" * 73)
        for name, t, anchor in (
            ("anchor: pydicom header read (no pixels)", t_h_anchor, t_h_anchor),
            ("identify_study, headers only", t_h, t_h_anchor),
            ("anchor: pydicom read + decode every pixel", t_p_anchor, t_p_anchor),
            ("identify_study, headers + pixels (warm)", t_p, t_p_anchor),
        ):
            print(f"{name:<44}{t:>9.3f}{n / t:>10.1f}{t / anchor:>10.2f}")
        print("\nlabels (headers only → with pixels):")
        for a, b in zip(rows, rows_p, strict=True):
            print(f"  #{a.series_number!s:<3} {a.description[:34]:<36}{a.label.value:<10}{a.confidence:>5.2f}  →  "
                  f"{b.label.value:<10}{b.confidence:>5.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
