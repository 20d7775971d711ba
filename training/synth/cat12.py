"""The CAT12 anatomy source: GM and WM of CAT12's Geodesic Shooting template, as
deepmriprep ships it.

File (``deepmriprep/data/templates/``, installed with ``pip install --no-deps deepmriprep``):
``Template_4_GS.nii.gz``, CAT12's default Geodesic Shooting template (last iteration),
1.5 mm, MNI152 space, volumes GM, WM and background; an average of the 555 healthy adults
(aged 20-86) of the IXI database.

The atlases deepmriprep ships beside it are not used: the one with ventricles and deep
nuclei (neuromorphometrics) is licensed CC BY-NC, which would follow every synthetic image
into training data. Licences (CAT12 GPL-2.0-or-later, IXI CC BY-SA 3.0, deepmriprep MIT)
are in ``training/synth/LICENSES.md``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CAT12_FILES", "cat12_brain", "cat12_paths"]

#: Files read from deepmriprep's ``data/templates`` folder.
CAT12_FILES: tuple[str, ...] = ("Template_4_GS.nii.gz",)


def cat12_paths() -> dict[str, Path]:
    """Locate the CAT12 template in the installed deepmriprep package.

    Returns
    -------
    dict of str to Path
        ``template``.

    Raises
    ------
    FileNotFoundError
        With a sentence naming the missing file or package and how to install it.
    """
    spec = importlib.util.find_spec("deepmriprep")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The deepmriprep package is not installed; it ships the CAT12 templates "
            "(install it with 'pip install --no-deps deepmriprep', as 'make setup' does), "
            "or choose the MNI152 anatomy source (mrinode synth --anatomy mni152)."
        )
    folder = Path(spec.origin).parent / "data" / "templates"
    paths = {"template": folder / CAT12_FILES[0]}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"CAT12 file {path} is missing; it comes from the deepmriprep package.")
    return paths


def _resample(data: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, shape: tuple[int, int, int],
              order: int) -> np.ndarray:
    """Sample ``data`` (voxel-to-RAS ``affine``) on the target grid; zero outside."""
    from scipy import ndimage as ndi

    to_src = np.linalg.inv(affine) @ target_affine
    matrix = to_src[:3, :3]
    diagonal = np.diag(matrix)
    if np.allclose(matrix, np.diag(diagonal)):  # axes aligned (flips and scaling): the fast path
        matrix = diagonal
    out: np.ndarray = ndi.affine_transform(data, matrix, offset=to_src[:3, 3], output_shape=shape,
                                           order=order, mode="constant", cval=0.0)
    return out


def cat12_brain(target_affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """GM and WM fractions of the CAT12 source on a target grid.

    Parameters
    ----------
    target_affine : numpy.ndarray
        Voxel-to-RAS of the target grid (the 1 mm MNI grid of the templates).
    shape : tuple of int
        Target grid shape.

    Returns
    -------
    tuple of numpy.ndarray
        ``(gm, wm)``, float32 (trilinear from 1.5 mm), GM + WM at most 1.
    """
    import nibabel as nib

    paths = cat12_paths()
    img: Any = nib.load(str(paths["template"]))
    if img.ndim != 4 or img.shape[3] < 2:
        raise ValueError(f"CAT12 template {paths['template']} should hold GM and WM volumes; its shape is {img.shape}.")
    affine = np.asarray(img.affine, dtype=np.float64)
    gm = _resample(np.asarray(img.dataobj[..., 0], dtype=np.float32), affine, target_affine, shape, order=1)
    wm = _resample(np.asarray(img.dataobj[..., 1], dtype=np.float32), affine, target_affine, shape, order=1)
    np.clip(gm, 0.0, 1.0, out=gm)
    np.clip(wm, 0.0, 1.0, out=wm)
    brain = gm + wm
    over = brain > 1.0
    gm[over] /= brain[over]
    wm[over] /= brain[over]
    del brain, over
    return gm.astype(np.float32, copy=False), wm.astype(np.float32, copy=False)
