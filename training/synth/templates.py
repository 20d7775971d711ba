"""Tissue fraction maps of a template head, built once per process from shipped files.

Two anatomy sources share one 1 mm MNI grid, one intracranial mask and one head outside
the brain; they differ in the brain (CSF, GM, WM):

- ``"mni152"``: GM and WM probability maps and the brain mask of the ICBM 2009a nonlinear
  symmetric MNI152 template as shipped by nilearn
  (``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``);
  CSF is the rest of the intracranial mask.
- ``"cat12"``: GM and WM of CAT12's Geodesic Shooting template (``Template_4_GS.nii.gz``,
  1.5 mm, an average of the IXI-555 adults aged 20-86) as shipped by deepmriprep, resampled
  (trilinear) onto the grid; CSF is the rest of the same intracranial mask. See
  :mod:`training.synth.cat12`.
- Deep grey matter (generator 1.2): both sources' GM maps give the deep nuclei (thalamus,
  basal ganglia) the same probability of "grey matter" as the cortex, so they were rendered
  with the cortex's relaxation times; in real heads their myelinated fibres put them between
  white matter and cortex on every weighting (a thalamus is not FLAIR-bright like cortex).
  Grey matter more than :data:`DEEP_GREY_START_MM` below the intracranial surface is therefore
  rendered as a grey/white mixture, up to :data:`DEEP_GREY_WM_SHARE` white matter from
  :data:`DEEP_GREY_FULL_MM` down (:func:`_deep_grey_mixture`). The depth is a proxy: deep
  parts of the insula and medial cortex are mixed too.
- Folded cortex (generator 1.3): averaging many heads blurs the cortex of neighbouring folds into
  slabs of "grey matter" up to 16 mm thick, where a real cortex is 1-4.5 mm thick with sulcal CSF
  and gyral white matter between its banks (Fischl B, Dale AM. Measuring the thickness of the
  human cerebral cortex from magnetic resonance images. PNAS 2000;97:11050-5). Averaged
  templates thus render a thick fold as one uniformly bright block on T2 and FLAIR. Cortical
  grey matter more than :data:`FOLD_START_MM` from the nearest non-grey voxel (a slab thicker
  than twice that) is rendered as folded cortex: up to :data:`FOLD_SHARE` of it, from
  :data:`FOLD_FULL_MM` on, goes half to CSF and half to white matter (:func:`_folded_cortex`).
  The rule fades out between :data:`DEEP_GREY_START_MM` and :data:`DEEP_GREY_FULL_MM` below the
  intracranial surface, where the deep-grey mixture takes over. The cerebellum is treated as
  cortex where it is shallow enough (its folia are far below the templates' resolution).
- Outside the brain (scalp fat, muscle and skin, skull): the Colin27 full-head T1
  (``ch2.nii.gz``) and its brain mask (``ch2bet.nii.gz``) from Debian's mricron-data,
  which lie on the same 1 mm MNI axes (an integer voxel shift apart). Extra-axial space
  inside Colin's brain mask but outside the MNI brain mask becomes CSF.

The licence notices of every source are in ``training/synth/LICENSES.md``.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ANATOMY_SOURCES", "MAP_NAMES", "TemplateMaps", "load_templates", "source_files", "template_paths"]

#: The tissue maps, in channel order: the brain (first three) then the head outside it.
MAP_NAMES: tuple[str, ...] = ("csf", "gm", "wm", "fat", "muscle", "bone", "blood")
#: Anatomy sources of the brain channels.
ANATOMY_SOURCES: tuple[str, ...] = ("mni152", "cat12")

_COLIN_DIR = Path("/usr/share/mricron/templates")

#: Grey matter this far (mm) below the intracranial surface starts to be rendered as a grey/white mixture.
DEEP_GREY_START_MM = 15.0
#: From this depth (mm) on, the mixture holds :data:`DEEP_GREY_WM_SHARE` white matter.
DEEP_GREY_FULL_MM = 25.0
#: Share of deep grey matter rendered as white matter.
DEEP_GREY_WM_SHARE = 0.5
#: Cortical grey matter this far (mm) from the nearest non-grey voxel starts to be rendered as folded cortex.
FOLD_START_MM = 2.5
#: From this distance (mm) on, :data:`FOLD_SHARE` of it is sulcal CSF and gyral white matter.
FOLD_FULL_MM = 4.0
#: Share of thick cortical grey matter rendered as CSF and white matter (half each).
FOLD_SHARE = 0.5


@dataclass(frozen=True)
class TemplateMaps:
    """Tissue fractions on the 1 mm MNI grid.

    Attributes
    ----------
    brain : numpy.ndarray
        float32, shape ``(3, ni, nj, nk)``: CSF, GM, WM fractions.
    head : numpy.ndarray
        float32, shape ``(4, ni, nj, nk)``: fat, muscle, bone, blood fractions (shared by
        every anatomy source). Brain and head fractions sum to at most 1 (the remainder is
        air).
    affine : numpy.ndarray
        4x4 voxel-to-RAS (mm) matrix of the grid.
    wm_centres : numpy.ndarray
        ``(n, 3)`` voxel indices where WM > 0.9 (candidate tumour centres), int32.
    brain_box : tuple
        ``(lo, hi)`` voxel indices (hi exclusive) outside which CSF, GM and WM are zero.
    source : str
        The anatomy source of the brain channels (one of :data:`ANATOMY_SOURCES`).
    """

    brain: np.ndarray
    head: np.ndarray
    affine: np.ndarray
    wm_centres: np.ndarray
    brain_box: tuple[tuple[int, int, int], tuple[int, int, int]]
    source: str = "mni152"

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(ni, nj, nk)`` of the grid."""
        _, ni, nj, nk = self.brain.shape
        return int(ni), int(nj), int(nk)


def template_paths() -> dict[str, Path]:
    """Locate the template files that packages ship.

    Returns
    -------
    dict of str to Path
        ``t1``, ``gm``, ``wm`` (nilearn MNI152 2009a) and ``colin``, ``colin_brain``.

    Raises
    ------
    FileNotFoundError
        With a sentence naming the missing file and the package that ships it.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("The nilearn package is not installed; it ships the MNI152 tissue maps.")
    data = Path(spec.origin).parent / "datasets" / "data"
    paths = {k: data / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
    paths["colin"] = _COLIN_DIR / "ch2.nii.gz"
    paths["colin_brain"] = _COLIN_DIR / "ch2bet.nii.gz"
    for key, path in paths.items():
        if not path.is_file():
            owner = "Debian package mricron-data" if key.startswith("colin") else "nilearn"
            raise FileNotFoundError(f"Template file {path} is missing; it comes from {owner}.")
    return paths


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img: Any = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def _onto_grid(data: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Place an image that differs from the target grid by an integer voxel shift."""
    shift = np.linalg.inv(affine) @ target_affine
    if not np.allclose(shift[:3, :3], np.eye(3)) or not np.allclose(shift[:3, 3], np.round(shift[:3, 3])):
        raise ValueError("Colin27 template is not on the MNI 1 mm axes; cannot place it by shifting.")
    off = np.round(shift[:3, 3]).astype(int)
    out = np.zeros(shape, dtype=np.float32)
    src = tuple(slice(max(o, 0), min(o + n, s)) for o, n, s in zip(off, shape, data.shape, strict=True))
    dst = tuple(
        slice(sl.start - o, sl.stop - o) for sl, o in zip(src, off, strict=True)
    )
    out[dst] = data[src]
    return out


@functools.lru_cache(maxsize=1)
def _build_1mm() -> tuple[TemplateMaps, np.ndarray]:
    """The MNI152 source and the intracranial mask (after the sinus is cut out of it)."""
    from scipy import ndimage as ndi

    paths = template_paths()
    t1, affine = _load(paths["t1"])
    shape = t1.shape
    maps = np.empty((len(MAP_NAMES), *shape), dtype=np.float32)
    csf, gm, wm, fat, muscle, bone, blood = maps  # views, filled in place below
    gm[...] = _load(paths["gm"])[0] / 255.0
    wm[...] = _load(paths["wm"])[0] / 255.0
    brain_mask = ndi.gaussian_filter(ndi.binary_fill_holes(t1 > 0).astype(np.float32), 0.6)
    del t1
    brain = gm + wm
    over = brain > 1.0
    gm[over] /= brain[over]
    wm[over] /= brain[over]
    del brain, over
    np.clip(brain_mask - gm - wm, 0.0, 1.0, out=csf)

    colin, c_aff = _load(paths["colin"])
    colin = _onto_grid(colin, c_aff, affine, shape)
    colin_brain = _onto_grid((_load(paths["colin_brain"])[0] > 0).astype(np.float32), c_aff, affine, shape)
    intracranial = np.maximum(brain_mask, ndi.gaussian_filter(colin_brain, 0.6))
    del colin_brain
    # Extra-axial CSF: inside Colin's brain but outside the MNI brain.
    csf += np.clip(intracranial - brain_mask, 0.0, 1.0)
    del brain_mask
    head = ndi.binary_fill_holes(ndi.binary_closing(colin > 18.0, iterations=2))
    outside = np.clip(ndi.gaussian_filter(head.astype(np.float32), 0.6) - intracranial, 0.0, 1.0)
    del head
    np.clip((colin - 95.0) / 55.0, 0.0, 1.0, out=fat)
    np.clip((50.0 - colin) / 30.0, 0.0, 1.0, out=bone)
    del colin
    np.clip(1.0 - fat - bone, 0.0, 1.0, out=muscle)
    fat *= outside
    bone *= outside
    muscle *= outside
    del outside
    blood[...] = _sagittal_sinus(intracranial, affine)
    keep = 1.0 - blood
    for channel in maps[:-1]:
        channel *= keep
    intracranial *= keep
    del keep
    total = maps.sum(axis=0)
    over = total > 1.0
    maps[:, over] /= total[over]
    del total, over
    centres = np.argwhere(wm > 0.9).astype(np.int32)  # before the deep-grey mixture: tumours stay in WM
    _grey_matter_corrections(maps[:3], intracranial)
    mni = TemplateMaps(brain=maps[:3], head=maps[3:], affine=affine, wm_centres=centres,
                       brain_box=_box(maps[:3].sum(axis=0) > 0), source="mni152")
    return mni, intracranial


@functools.lru_cache(maxsize=1)
def _build_cat12_1mm() -> TemplateMaps:
    """The CAT12 source: its GM/WM within the shared intracranial mask, CSF the rest."""
    from training.synth.cat12 import cat12_brain

    mni, intracranial = _build_1mm()
    gm, wm = cat12_brain(mni.affine, mni.shape)
    # Brain within the intracranial space, and brain plus head at most 1.
    room = np.minimum(intracranial, 1.0 - mni.head.sum(axis=0))
    brain = gm + wm
    over = brain > room
    scale = room[over] / brain[over]
    gm[over] *= scale
    wm[over] *= scale
    del brain, over, scale
    csf = np.clip(room - gm - wm, 0.0, 1.0)
    del room
    maps = np.stack([csf, gm, wm])
    del csf, gm
    # Tumour centres: deep WM in both sources. CAT12's WM > 0.9 also covers the brainstem and
    # cerebellar WM (~8 % of its voxels against ~1 % for MNI152); requiring the MNI152 WM
    # keeps the tumours where the MNI152 source puts them (cerebral WM, as adult gliomas).
    mni_wm = np.zeros(mni.shape, dtype=bool)  # MNI152 WM > 0.9 before its deep-grey mixture
    mni_wm[tuple(mni.wm_centres.T)] = True
    centres = np.argwhere((wm > 0.9) & mni_wm).astype(np.int32)
    del mni_wm
    _grey_matter_corrections(maps, intracranial)
    return TemplateMaps(brain=maps, head=mni.head, affine=mni.affine, wm_centres=centres,
                        brain_box=_box(maps.sum(axis=0) > 0), source="cat12")


def _grey_matter_corrections(brain: np.ndarray, intracranial: np.ndarray) -> None:
    """Folded cortex, then the deep-grey mixture, in place on the brain maps (CSF, GM, WM; 1 mm grid).

    Parameters
    ----------
    brain : numpy.ndarray
        (3, ni, nj, nk) CSF, GM and WM fractions; their sum is unchanged.
    intracranial : numpy.ndarray
        Intracranial fraction; its surface (at 0.5) is where the depth is measured from.
    """
    from scipy import ndimage as ndi

    depth = ndi.distance_transform_edt(intracranial > 0.5).astype(np.float32)
    deep = np.clip((depth - DEEP_GREY_START_MM) / (DEEP_GREY_FULL_MM - DEEP_GREY_START_MM), 0.0, 1.0)
    del depth
    _folded_cortex(brain, 1.0 - deep)
    _deep_grey_mixture(brain[1], brain[2], deep)


def _folded_cortex(brain: np.ndarray, cortical: np.ndarray) -> None:
    """Render grey-matter slabs thicker than a cortex as folded cortex, in place (1 mm grid).

    Parameters
    ----------
    brain : numpy.ndarray
        (3, ni, nj, nk) CSF, GM and WM fractions; their sum is unchanged.
    cortical : numpy.ndarray
        Weight 1 in the cortex falling to 0 in deep grey matter.
    """
    from scipy import ndimage as ndi

    csf, gm, wm = brain
    inner = ndi.distance_transform_edt(gm > 0.5).astype(np.float32)
    share = np.clip((inner - FOLD_START_MM) / (FOLD_FULL_MM - FOLD_START_MM), 0.0, 1.0)
    del inner
    share *= FOLD_SHARE * cortical
    moved = gm * share
    del share
    gm -= moved
    moved *= 0.5
    csf += moved
    wm += moved


def _deep_grey_mixture(gm: np.ndarray, wm: np.ndarray, deep: np.ndarray) -> None:
    """Move part of the deep grey matter's fraction to white matter, in place (1 mm grid).

    Parameters
    ----------
    gm, wm : numpy.ndarray
        Grey and white matter fractions; their sum is unchanged.
    deep : numpy.ndarray
        0 above :data:`DEEP_GREY_START_MM` below the intracranial surface, rising to 1 at
        :data:`DEEP_GREY_FULL_MM`.
    """
    moved = gm * (deep * DEEP_GREY_WM_SHARE)
    gm -= moved
    wm += moved


def _sagittal_sinus(intracranial: np.ndarray, affine: np.ndarray, radius_mm: float = 3.5) -> np.ndarray:
    """Fraction map of the superior sagittal sinus: a tube along the midline just
    beneath the vertex of the intracranial space, from the occiput to the frontal pole."""
    ni, nj, nk = (int(n) for n in intracranial.shape)
    blood = np.zeros((ni, nj, nk), dtype=np.float32)
    inv = np.linalg.inv(affine)
    i0 = round(float((inv[:3, :3] @ np.zeros(3) + inv[:3, 3])[0]))
    voxel = float(abs(affine[0, 0]))
    r = int(np.ceil(radius_mm / voxel)) + 1
    offs = np.arange(-r, r + 1)
    di, dk = np.meshgrid(offs, offs, indexing="ij")
    for j in range(nj):
        y = float(affine[1, 1] * j + affine[1, 3])
        if not -95.0 <= y <= 45.0:
            continue
        column = np.flatnonzero(intracranial[i0, j, :] > 0.5)
        if column.size == 0:
            continue
        k0 = int(column.max()) - round(radius_mm / voxel)
        frac = np.clip(radius_mm / voxel + 0.5 - np.sqrt(di**2 + dk**2), 0.0, 1.0).astype(np.float32)
        ii, kk = i0 + di, k0 + dk
        ok = (ii >= 0) & (ii < ni) & (kk >= 0) & (kk < nk)
        blood[ii[ok], j, kk[ok]] = np.maximum(blood[ii[ok], j, kk[ok]], frac[ok])
    return blood


def _box(mask: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    return (int(lo[0]), int(lo[1]), int(lo[2])), (int(hi[0]), int(hi[1]), int(hi[2]))


def source_files(source: str) -> list[str]:
    """File names an anatomy source reads (for the parameter JSON).

    Parameters
    ----------
    source : str
        One of :data:`ANATOMY_SOURCES`.

    Returns
    -------
    list of str
        Base names of the template files, brain first, then the head.
    """
    from training.synth.cat12 import CAT12_FILES

    head = ["ch2.nii.gz", "ch2bet.nii.gz"]
    mni = [f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")]
    if source == "mni152":
        return [*mni, *head]
    if source == "cat12":
        return [*CAT12_FILES, mni[0], *head]  # the MNI T1 gives the shared intracranial mask
    raise ValueError(f"Unknown anatomy source {source!r}; expected one of {', '.join(ANATOMY_SOURCES)}.")


@functools.lru_cache(maxsize=2)
def _smoothed_head(voxel_mm: float) -> np.ndarray:
    from scipy import ndimage as ndi

    head = _build_1mm()[0].head
    sigma = voxel_mm / 2.355
    return np.stack([ndi.gaussian_filter(m, sigma) for m in head]).astype(np.float32)


@functools.lru_cache(maxsize=8)
def load_templates(voxel_mm: float = 1.0, source: str = "mni152") -> TemplateMaps:
    """Return the template tissue maps of an anatomy source, prepared for sampling at ``voxel_mm``.

    Parameters
    ----------
    voxel_mm : float
        Output voxel size. Above 1 mm the maps are smoothed (Gaussian, FWHM about one
        output voxel) so that sampling them gives partial-volume fractions.
    source : str
        ``"mni152"`` or ``"cat12"`` (see the module docstring). Built once per process.

    Returns
    -------
    TemplateMaps
        Cached; do not modify the arrays. The head channels are the same arrays for
        every source.

    Raises
    ------
    ValueError
        For a non-positive voxel size or an unknown source.
    """
    if voxel_mm <= 0:
        raise ValueError(f"voxel_mm must be positive; got {voxel_mm}.")
    if source not in ANATOMY_SOURCES:
        raise ValueError(f"Unknown anatomy source {source!r}; expected one of {', '.join(ANATOMY_SOURCES)}.")
    base = _build_1mm()[0] if source == "mni152" else _build_cat12_1mm()
    if voxel_mm <= 1.0:
        return base
    from scipy import ndimage as ndi

    sigma = voxel_mm / 2.355
    brain = np.stack([ndi.gaussian_filter(m, sigma) for m in base.brain]).astype(np.float32)
    return TemplateMaps(brain=brain, head=_smoothed_head(float(voxel_mm)), affine=base.affine,
                        wm_centres=base.wm_centres, brain_box=_box(brain.sum(axis=0) > 1e-4), source=source)
