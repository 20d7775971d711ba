"""Training slices for the sequence classifier, cut from the synthetic engine's subjects.

Each subject (random vendor, field strength, SNR, bias field, with or without tumour) is
generated on a coarse grid; from every sequence the classifier knows, slices are cut along
all three axes (axial, sagittal, coronal), averaged over a random slab (2–6 mm, as thick
slices do) and resized to a fixed square. The slices of one subject are cached as one
``.npz`` so that training never regenerates them.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["CLASSES", "STORE_SIZE", "load_slices", "main", "make_acquired_slices", "make_subject_slices"]

log = logging.getLogger(__name__)

#: Classes of the pixel classifier ("T1" = the T1 family: pre- and post-contrast).
CLASSES: tuple[str, ...] = ("T1", "T2", "FLAIR", "PD", "DWI", "ADC", "SWI")

#: Stored slice size (pixels); training crops/resizes from it.
STORE_SIZE = 96

#: synth sequence → classifier class.
_SOURCES: tuple[tuple[str, str], ...] = (
    ("T1", "T1"), ("T1C", "T1"), ("T2", "T2"), ("FLAIR", "FLAIR"), ("PD", "PD"),
    ("DWI", "DWI"), ("ADC", "ADC"), ("SWI", "SWI"),
)


def _square(img: np.ndarray, size: int) -> np.ndarray:
    from scipy.ndimage import zoom

    h, w = img.shape
    n = max(h, w)
    pad = np.zeros((n, n), dtype=np.float32)
    pad[(n - h) // 2 : (n - h) // 2 + h, (n - w) // 2 : (n - w) // 2 + w] = img
    return zoom(pad, size / n, order=1).astype(np.float32)


def make_subject_slices(seed: int, per_axis: int = 6, voxel_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic subject and cut labelled slices from it.

    Parameters
    ----------
    seed : int
        The subject's seed (drives every random choice).
    per_axis : int
        Slices per axis per sequence.
    voxel_mm : float
        The generator's grid.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        float16 slices (n, STORE_SIZE, STORE_SIZE) scaled to their 99th percentile, and
        int64 class indices (n,).
    """
    from training.synth import generate_subject

    rng = np.random.default_rng(seed)
    subject = generate_subject(
        seed,
        field_strength=float(rng.choice([1.5, 3.0])),
        sequences=[s for s, _ in _SOURCES],
        voxel_mm=voxel_mm,
        snr_scale=float(rng.uniform(0.5, 1.5)),
        tumour_free_fraction=0.2,
    )
    images = {k.value: v for k, v in subject.images.items()}
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for source, cls in _SOURCES:
        vol = images[source].astype(np.float32)
        brain = vol > 0.05 * float(np.percentile(vol, 99.5))
        for axis in range(3):
            moved = np.moveaxis(vol, axis, 0)
            mask = np.moveaxis(brain, axis, 0).reshape(moved.shape[0], -1).mean(axis=1)
            idx = np.flatnonzero(mask > 0.25 * mask.max())
            if idx.size == 0:
                continue
            picks = rng.choice(idx, size=min(per_axis, idx.size), replace=False)
            for k in picks:
                half = int(rng.integers(0, 2))
                slab = moved[max(0, k - half) : k + half + 1].mean(axis=0)
                sl = _square(slab, STORE_SIZE)
                scale = float(np.percentile(sl, 99)) or 1.0
                xs.append((sl / scale).astype(np.float16))
                ys.append(CLASSES.index(cls))
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def make_acquired_slices(seed: int, per_series: int = 10, voxel_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Generate one subject, acquire every series as a scanner would, and cut slices.

    The slices come from the acquired stacks (the plane, matrix, slice thickness and noise
    of each protocol, the highest b-value of a diffusion series), chosen the way
    ``models.seqclf.prepare_slices`` chooses them at inference (the slices with the most
    signal), plus a few random ones.

    Parameters
    ----------
    seed : int
        The subject's seed.
    per_series : int
        Slices per series.
    voxel_mm : float
        The generator's grid.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        float16 slices (n, STORE_SIZE, STORE_SIZE) scaled to their stack's 99th percentile,
        and int64 class indices (n,).
    """
    from training.synth import generate_subject

    rng = np.random.default_rng(seed + 7919)
    subject = generate_subject(
        seed,
        field_strength=float(rng.choice([1.5, 3.0])),
        sequences=[s for s, _ in _SOURCES],
        voxel_mm=voxel_mm,
        snr_scale=float(rng.uniform(0.5, 1.5)),
        tumour_free_fraction=0.2,
    )
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for source, cls in _SOURCES:
        series = subject.acquire(source)
        stack = max(series.stacks, key=lambda st: st.b_value or 0.0)
        vol = np.moveaxis(stack.data.astype(np.float32), 2, 0)  # (k, i, j): slices first
        energy = vol.reshape(vol.shape[0], -1).mean(axis=1)
        top = np.argsort(energy)[::-1][: per_series // 2 + 2]
        rest = np.flatnonzero(energy > 0.3 * energy.max())
        picks = list(rng.choice(top, size=min(per_series // 2, top.size), replace=False))
        if rest.size:
            picks += list(rng.choice(rest, size=min(per_series - len(picks), rest.size), replace=False))
        scale = float(np.percentile(vol[picks], 99)) or 1.0
        for k in picks:
            xs.append((_square(vol[k].T, STORE_SIZE) / scale).astype(np.float16))
            ys.append(CLASSES.index(cls))
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def load_slices(cache: Path, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Load the cached slices of ``seeds`` (generating missing ones).

    Parameters
    ----------
    cache : Path
        Folder of ``subject-<seed>.npz`` files.
    seeds : sequence of int
        The subjects.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Slices and class indices of all subjects.
    """
    cache.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for seed in seeds:
        f = cache / f"subject-{seed}.npz"
        acquired = cache / f"acquired-{seed}.npz"
        if acquired.is_file():
            f = acquired
        elif not f.is_file():
            x, y = make_subject_slices(seed)
            tmp = f.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, x=x, y=y)
            tmp.rename(f)
        with np.load(f) as d:
            xs.append(d["x"])
            ys.append(d["y"])
    return np.concatenate(xs), np.concatenate(ys)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the slice cache: ``python -m training.seqclf.data --cache DIR --seeds A B``."""
    p = argparse.ArgumentParser(description="Cache sequence-classifier training slices from synthetic subjects.")
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs=2, metavar=("FIRST", "STOP"), required=True)
    p.add_argument("--acquired", action="store_true", help="cut slices from the acquired series (slower, closer to inference)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    args.cache.mkdir(parents=True, exist_ok=True)
    for seed in range(*args.seeds):
        if args.acquired:
            f = args.cache / f"acquired-{seed}.npz"
            if not f.is_file():
                x, y = make_acquired_slices(seed)
                tmp = f.with_suffix(".tmp.npz")
                np.savez_compressed(tmp, x=x, y=y)
                tmp.rename(f)
        else:
            load_slices(args.cache, [seed])
        log.info("subject %d cached", seed)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
