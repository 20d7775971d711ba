"""A tiny labelled phantom (ellipsoid head, spherical tumour with core, rim and oedema) as NIfTI.

A test fixture for the training loop and the engine, not synthetic MRI: the physics-based
engine is ``training.synth``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["phantom_arrays", "write_phantom_subjects"]

# Per label (background-in-head, core, oedema, enhancing) intensity of each sequence.
_CONTRAST = {
    "T1": (600.0, 300.0, 450.0, 500.0),
    "T1C": (600.0, 300.0, 450.0, 1200.0),
    "T2": (500.0, 1100.0, 900.0, 700.0),
    "FLAIR": (400.0, 500.0, 1100.0, 800.0),
}


def phantom_arrays(seed: int, shape: tuple[int, int, int] = (48, 56, 48)) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Return ``({sequence: image}, labels)`` for one phantom subject."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    centre = np.array(shape, dtype=np.float32)[:, None, None, None] / 2
    head = (((grid - centre) / (np.array(shape)[:, None, None, None] * 0.42)) ** 2).sum(0) <= 1.0
    c = centre[:, 0, 0, 0] + rng.uniform(-6, 6, 3)
    r = float(rng.uniform(4, 8))
    dist = np.sqrt(((grid - c[:, None, None, None]) ** 2).sum(0))
    labels = np.zeros(shape, dtype=np.uint8)
    labels[head & (dist <= r * 1.8)] = 2
    labels[head & (dist <= r)] = 3
    labels[head & (dist <= r * 0.55)] = 1
    images = {}
    for name, values in _CONTRAST.items():
        img = np.zeros(shape, dtype=np.float32)
        img[head] = values[0]
        for lab in (1, 2, 3):
            img[labels == lab] = values[lab]
        img += rng.normal(0, 20, shape).astype(np.float32)
        images[name] = np.abs(img)
    return images, labels


def write_phantom_subjects(out: Path, n: int, seed: int = 0, voxel_mm: float = 2.0) -> Path:
    """Write ``n`` phantom subjects in the synthetic engine's layout; return ``out``."""
    import nibabel as nib

    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    for i in range(n):
        images, labels = phantom_arrays(seed + i)
        sub = out / f"phantom-{seed + i:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        for name, img in images.items():
            nib.save(nib.Nifti1Image(img, affine), str(sub / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(labels, affine), str(sub / "labels.nii.gz"))
        (sub / "params.json").write_text(json.dumps({"seed": seed + i, "phantom": True}))
    return out
