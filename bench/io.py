"""Imaging I/O benchmark: series -> volume vs dcm2niix, SEG write vs bare highdicom, SR write.

Run as a module (``python -m bench.io [--quick]``; running the file directly would put
``bench/`` first on ``sys.path`` and shadow the standard ``io`` module). Prints a table;
every figure is compared with an anchor measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]


def _best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _labels(shape: tuple[int, int, int]) -> np.ndarray:
    """Three nested tumour sub-regions (ellipsoids) covering ~40 % of the slices."""
    ni, nj, nk = shape
    i, j, k = np.meshgrid(np.arange(ni), np.arange(nj), np.arange(nk), indexing="ij", sparse=True)
    r = (
        ((i - ni * 0.4) / (ni * 0.18)) ** 2
        + ((j - nj * 0.55) / (nj * 0.15)) ** 2
        + ((k - nk * 0.5) / (nk * 0.2)) ** 2
    )
    labels = np.zeros(shape, np.uint8)
    labels[r < 1.0] = 2
    labels[r < 0.5] = 3
    labels[r < 0.15] = 1
    return labels


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Parameters
    ----------
    argv : sequence of str, optional
        ``--quick`` for a small run (64 slices of 256x256; SEG 40 slices).

    Returns
    -------
    int
        0.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.io", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import highdicom as hd
    from pydicom.uid import generate_uid

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dicom_node.io.codes import BRATS_SEGMENTS, AlgorithmSpec
    from dicom_node.io.reader import read_series
    from dicom_node.io.seg import labels_to_segment_numbers, segment_descriptions, write_seg
    from dicom_node.io.sr import segment_volumes_ml, write_measurement_report
    from dicom_node.sequences import SequenceLabel
    from tests.io.series_factory import make_series

    n_slices, matrix = (64, 256) if args.quick else (200, 512)
    seg_shape = (240, 240, 40) if args.quick else (240, 240, 155)
    repeat = 2 if args.quick else 3
    rows: list[tuple[str, str, str]] = []
    algorithm = AlgorithmSpec("bench-segmenter", "0.0")
    with tempfile.TemporaryDirectory(prefix="bench-io-") as tmp:
        root = Path(tmp)
        paths, _ = make_series(
            root / "big", shape=(matrix, matrix, n_slices), spacing=(0.5, 0.5, 1.0), instance_order="random"
        )
        if shutil.which("dcm2niix"):

            def run_dcm2niix() -> None:
                out = root / f"d2n-{time.perf_counter_ns()}"
                out.mkdir()
                subprocess.run(
                    ["dcm2niix", "-z", "n", "-b", "n", "-o", str(out), str(root / "big")],
                    capture_output=True,
                    check=True,
                )

            t_ref, _ = _best_of(run_dcm2niix, repeat)
            rows.append((f"dcm2niix, {n_slices} x {matrix}^2 -> .nii (anchor)", f"{t_ref:.3f} s", "1.00"))
        else:
            t_ref = float("nan")
            rows.append(("dcm2niix", "not installed", "-"))
        t_read, vols = _best_of(lambda: read_series(paths), repeat)
        rows.append(
            (f"read_series, {n_slices} x {matrix}^2 -> Volume", f"{t_read:.3f} s", f"{t_read / t_ref:.2f}")
        )
        rows.append(("", f"{n_slices / t_read:.0f} slices/s", ""))

        seg_paths, _ = make_series(root / "seg", shape=seg_shape, spacing=(1.0, 1.0, 1.0))
        (ref,) = read_series(seg_paths)
        labels = _labels(ref.shape)
        numbers = labels_to_segment_numbers(labels, BRATS_SEGMENTS)
        planes = np.ascontiguousarray(np.transpose(numbers, (2, 1, 0)))

        def bare_highdicom() -> Any:
            return hd.seg.Segmentation(
                source_images=ref.headers,
                pixel_array=planes,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=segment_descriptions(BRATS_SEGMENTS, algorithm),
                series_instance_uid=generate_uid(),
                series_number=900,
                sop_instance_uid=generate_uid(),
                instance_number=1,
                manufacturer="bench",
                manufacturer_model_name="bench",
                software_versions="0",
                device_serial_number="0",
            )

        t_hd, _ = _best_of(bare_highdicom, repeat)
        label = f"{seg_shape[2]} x {seg_shape[0]}^2, 3 segments"
        rows.append((f"highdicom defaults, BINARY SEG {label} (anchor)", f"{t_hd:.3f} s", "1.00"))
        t_seg, seg = _best_of(lambda: write_seg(labels, ref, BRATS_SEGMENTS, algorithm), repeat)
        rows.append(
            (
                f"write_seg BINARY, empty frames omitted ({int(seg.NumberOfFrames)} frames)",
                f"{t_seg:.3f} s",
                f"{t_seg / t_hd:.2f}",
            )
        )
        t_lm, _ = _best_of(lambda: write_seg(labels, ref, BRATS_SEGMENTS, algorithm, labelmap=True), repeat)
        rows.append(("write_seg LABELMAP", f"{t_lm:.3f} s", f"{t_lm / t_hd:.2f}"))
        t_save, _ = _best_of(lambda: seg.save_as(root / "seg.dcm"), repeat)
        rows.append(("save SEG to disk", f"{t_save:.3f} s", f"{t_save / t_hd:.2f}"))

        class Ident:
            series_uid = ref.series_uid
            series_number = 3
            description = "bench"
            label = SequenceLabel.T1C
            confidence = 0.9

        volumes = segment_volumes_ml(labels, ref, BRATS_SEGMENTS)
        t_sr, _ = _best_of(
            lambda: write_measurement_report(
                seg=seg,
                reference=ref,
                source_volumes=[ref],
                segment_volumes_ml=volumes,
                identifications=[Ident()],
                algorithm=algorithm,
            ),
            repeat,
        )
        rows.append(
            (
                f"write_measurement_report (TID 1500, {seg_shape[2]} evidence images)",
                f"{t_sr:.3f} s",
                f"{t_sr / t_hd:.2f}",
            )
        )
        del vols
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows.append((f"(1-min load average during the run: {load:.1f} on {os.cpu_count()} cores)", "", ""))
    width = max(len(r[0]) for r in rows)
    print(f"{'imaging I/O (best of ' + str(repeat) + ')':<{width}}  {'time':>14}  {'x anchor':>8}")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>14}  {ratio:>8}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
