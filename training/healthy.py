"""Predicted tumour volume on real healthy brains: T1 templates that installed packages ship.

- ``mni152``: the ICBM 2009a nonlinear symmetric MNI152 T1 shipped by nilearn;
- ``colin27``: the Colin27 single-subject T1 (``ch2.nii.gz``) of Debian's mricron-data.

Both are resampled to a 2 mm RAS grid and given to the inference engine as a T1 alone —
the hardest case for false positives, since necrotic core is T1-dark like CSF. A healthy
brain should get (almost) no tumour; the acceptance bound is under 1 mL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["healthy_volumes", "template_paths", "template_t1"]


def template_paths() -> dict[str, Path]:
    """The installed healthy-brain T1 templates by name (missing ones are left out)."""
    found: dict[str, Path] = {}
    try:
        import nilearn

        mni = Path(nilearn.__file__).parent / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
        if mni.is_file():
            found["mni152"] = mni
    except ImportError:
        pass
    colin = Path("/usr/share/mricron/templates/ch2.nii.gz")
    if colin.is_file():
        found["colin27"] = colin
    return found


def template_t1(path: str | Path, spacing_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Read a template T1 and resample it to an isotropic RAS grid; return ``(data, affine)``."""
    import nibabel as nib

    from models.preprocess import ras_grid, resample

    img: Any = nib.load(str(path))
    shape, affine = ras_grid(img.shape[:3], img.affine, [spacing_mm] * 3)
    data = resample(np.asarray(img.dataobj, dtype=np.float32)[None], img.affine, shape, affine)[0].numpy()
    return data, affine


def healthy_volumes(engine: Any, spacing_mm: float = 2.0) -> dict[str, float]:
    """Predicted tumour volume (mL, labels > 0) per installed template, T1 alone.

    Parameters
    ----------
    engine : models.engine.InferenceEngine
        A loaded engine whose channels include ``T1``.
    spacing_mm : float
        Grid spacing the templates are resampled to.
    """
    out: dict[str, float] = {}
    for name, path in template_paths().items():
        data, affine = template_t1(path, spacing_mm)
        pred = engine.predict({"T1": data}, affine)
        out[f"{name}_{spacing_mm:g}mm"] = round(float((pred.labels > 0).sum()) * spacing_mm ** 3 / 1000.0, 2)
    return out
