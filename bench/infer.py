"""Inference benchmark: the tumour pipeline on a 4-sequence DICOM study, per stage, with peak memory.

``python -m bench.infer [--quick] [--device auto|cpu|cuda] [--model NAME]``

A synthetic 4-sequence study (T1, T1C, T2, FLAIR; 1 mm, or 2 mm with ``--quick``) is
written as DICOM, then each measurement runs in a fresh process (so its peak RSS is its
own):

* ``pipeline``: ``dicom_node.pipelines.tumour.run`` end to end (identification, reading,
  resampling, model, SEG + SR), seconds per stage from its summary;
* anchor ``monai-swi model grid``: MONAI's plain ``sliding_window_inference`` (constant
  blending, overlap 0.25) with the same network on the same model-grid input the engine
  builds;
* anchor ``monai-swi 1 mm``: the same call on the four sequences at their native grid,
  i.e. without the engine's model grid.

Figures are printed as a table with ratios to the first anchor.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child_pipeline(study: str, out: str, model: str, device: str, q: Any) -> None:
    from dicom_node.io.grouping import iter_files
    from dicom_node.pipelines import PipelineRequest
    from dicom_node.pipelines.tumour import run

    t0 = time.perf_counter()
    result = run(PipelineRequest(study_uid="bench", instance_paths=iter_files(study), out_dir=Path(out),
                                 options={"model": model, "use_pixels": True}, device=device))
    total = time.perf_counter() - t0
    q.put({"total": total, "stages": result.summary["seconds"], "peak_mb": _peak_mb(),
           "device": result.summary.get("device", "?"), "grid": None})


def _child_swi(nifti_dir: str, model: str, device: str, model_grid: bool, q: Any) -> None:
    import nibabel as nib
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from models.engine import get_engine
    from models.preprocess import zscore_foreground

    engine = get_engine(model, device=device)
    images: dict[str, np.ndarray] = {}
    affine = None
    for name in engine.channels:
        img: Any = nib.load(str(Path(nifti_dir) / f"{name}.nii.gz"))
        images[name] = np.asarray(img.dataobj, dtype=np.float32)
        affine = img.affine
    assert affine is not None
    t0 = time.perf_counter()
    if model_grid:
        x, _, _ = engine.prepare(images, affine)
    else:
        stack = np.stack([images[c] for c in engine.channels])
        x = torch.from_numpy(zscore_foreground(stack, [True] * len(engine.channels)))
    t1 = time.perf_counter()
    with torch.inference_mode():
        out = sliding_window_inference(x[None].to(engine.device), engine.roi_size, 1, engine.net, overlap=0.25)
    assert isinstance(out, torch.Tensor)
    labels = torch.argmax(out[0], 0)
    t2 = time.perf_counter()
    q.put({"total": t2 - t0, "stages": {"prepare": t1 - t0, "sliding_window": t2 - t1}, "peak_mb": _peak_mb(),
           "device": engine.device, "grid": tuple(int(s) for s in labels.shape)})


def _measure(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    result: dict[str, Any] = q.get()
    p.join()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Parameters
    ----------
    argv : sequence of str, optional
        ``[--quick] [--device auto|cpu|cuda] [--model NAME]``.

    Returns
    -------
    int
        0.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.infer", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 mm study instead of 1 mm")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--model", default="brain-tumour-demo")
    args = parser.parse_args(list(argv) if argv is not None else None)
    from training.synth import generate_subject, write_subject

    voxel = 2.0 if args.quick else 1.0
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        folder = write_subject(generate_subject(9300, voxel_mm=voxel, tumour=True), tmp, dicom=True)
        rows = [
            ("monai-swi model grid (anchor)", _measure(_child_swi, str(folder), args.model, args.device, True)),
            ("monai-swi native grid", _measure(_child_swi, str(folder), args.model, args.device, False)),
            ("mrinode pipeline", _measure(_child_pipeline, str(folder / "dicom"), str(Path(tmp) / "out"),
                                          args.model, args.device)),
        ]
    anchor = rows[0][1]["total"]
    print(f"\nInference benchmark: 4-sequence synthetic study at {voxel:g} mm, model {args.model}, "
          f"device {rows[-1][1]['device']}, {len(__import__('os').sched_getaffinity(0))} CPU threads")
    print(f"{'measurement':<32} {'seconds':>8} {'x anchor':>9} {'peak MB':>9}  stages")
    for name, r in rows:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
        print(f"{name:<32} {r['total']:8.1f} {r['total'] / anchor:9.2f} {r['peak_mb']:9.0f}  {stages}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
