"""Glioma-like tumours in BraTS convention: 1 necrotic / non-enhancing core, 2 oedema, 3 enhancing.

Each tumour is a randomly oriented, irregular (noise-perturbed) ellipsoid: a necrotic
centre, an enhancing rim (sometimes incomplete, sometimes absent as in low-grade
tumours) and oedema that spreads farther in white matter than in grey matter and stays
in the brain. Regions: WT = {1, 2, 3}, TC = {1, 3}, ET = {3}.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from training.synth.anatomy import MassEffect, Pose, pose_forward
from training.synth.templates import TemplateMaps

__all__ = ["BRATS_LABELS", "REGIONS", "TumourSpec", "draw_tumours", "paint_tumours", "regions", "smooth_noise"]

#: BraTS label values and names.
BRATS_LABELS: dict[int, str] = {0: "background", 1: "necrotic core", 2: "oedema", 3: "enhancing tumour"}

#: BraTS evaluation regions as sets of labels.
REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}

_PRIORITY = np.array([0, 2, 1, 3], dtype=np.uint8)  # rank of labels 0,1,2,3 (ET > NCR > ED)


@dataclass(frozen=True)
class TumourSpec:
    """One tumour's random parameters (output RAS, mm)."""

    centre_ras: tuple[float, float, float]
    core_radius_mm: float
    necrosis_ratio: float
    oedema_radius_mm: float
    axes: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    enhancing: bool
    rim_completeness: float
    noise_seed: int
    mass_effect: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready parameters."""
        return asdict(self)


def draw_tumours(rng: np.random.Generator, templates: TemplateMaps, pose: Pose) -> tuple[list[TumourSpec], Pose]:
    """Draw 1 (80 %) or 2 tumours centred in white matter, and add their mass effect.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    templates : TemplateMaps
        Supplies candidate centres (template WM voxels).
    pose : Pose
        The subject's head pose; centres are mapped through it to scanner space.

    Returns
    -------
    tuple
        The tumour specifications and the pose with their mass effects added.
    """
    from dataclasses import replace

    n = 1 if rng.random() < 0.8 else 2
    specs: list[TumourSpec] = []
    effects: list[MassEffect] = []
    for _ in range(n):
        vox = templates.wm_centres[int(rng.integers(len(templates.wm_centres)))]
        ras_t = templates.affine[:3, :3] @ vox + templates.affine[:3, 3]
        centre = pose_forward(ras_t, pose)
        core = float(rng.uniform(6.0, 20.0))
        spec = TumourSpec(
            centre_ras=(float(centre[0]), float(centre[1]), float(centre[2])),
            core_radius_mm=core,
            necrosis_ratio=float(rng.uniform(0.0, 0.7)),
            oedema_radius_mm=float(core + rng.uniform(5.0, 25.0)),
            axes=(float(rng.uniform(0.75, 1.3)), float(rng.uniform(0.75, 1.3)), float(rng.uniform(0.75, 1.3))),
            rotation_deg=(float(rng.uniform(-90, 90)), float(rng.uniform(-90, 90)), float(rng.uniform(-90, 90))),
            enhancing=bool(rng.random() < 0.85),
            rim_completeness=float(rng.uniform(0.6, 1.0)),
            noise_seed=int(rng.integers(0, 2**31 - 1)),
            mass_effect=float(rng.uniform(0.15, 0.5)),
        )
        specs.append(spec)
        effects.append(MassEffect(spec.centre_ras, spec.core_radius_mm * 1.2, spec.mass_effect))
    return specs, replace(pose, mass_effects=tuple(effects))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], ctrl: int = 6) -> np.ndarray:
    """Smooth random field (unit-variance control points, linear interpolation), float32.

    A ``ctrl``-cubed lattice of standard normal values is interpolated (trilinear, the
    lattice points at the centres of ``ctrl`` equal cells, edges held) onto ``shape``.
    """
    import torch
    import torch.nn.functional as F

    small = torch.from_numpy(rng.standard_normal((ctrl, ctrl, ctrl)).astype(np.float32))
    up = F.interpolate(small[None, None], size=tuple(int(n) for n in shape[:3]), mode="trilinear", align_corners=False)
    result: np.ndarray = up[0, 0].numpy()
    return result


def paint_tumours(
    specs: list[TumourSpec], affine: np.ndarray, gm: np.ndarray, wm: np.ndarray, csf: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, tuple[slice, ...] | None]:
    """Rasterise tumours onto the output grid.

    Parameters
    ----------
    specs : list of TumourSpec
        Tumours to paint (may be empty).
    affine : numpy.ndarray
        Output voxel-to-RAS matrix.
    gm, wm, csf : numpy.ndarray
        Warped tissue fractions on the output grid.

    Returns
    -------
    tuple
        ``labels`` (uint8, BraTS 0/1/2/3), ``fractions`` (float32, shape
        ``(3,) + box shape``: necrosis, oedema, enhancing with soft edges) and ``box``
        (the slices where the fractions lie); both ``None`` when there is no tumour.
    """
    from scipy import ndimage as ndi

    from training.synth.anatomy import rotation_matrix

    shape = gm.shape
    labels = np.zeros(shape, dtype=np.uint8)
    if not specs:
        return labels, None, None
    inv = np.linalg.inv(affine)
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    for spec in specs:
        rng = np.random.default_rng(spec.noise_seed)
        c_vox = inv[:3, :3] @ np.asarray(spec.centre_ras) + inv[:3, 3]
        half = (spec.oedema_radius_mm * 1.6 + 6.0) / voxel
        lo = np.maximum(np.floor(c_vox - half).astype(int), 0)
        hi = np.minimum(np.ceil(c_vox + half).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        bshape = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
        # r = |(d @ rot) / axes| with d the offset (mm) from the centre, built axis by axis
        # from broadcast 1-D offsets (no (n, 3) array of points).
        offsets = [((np.arange(a, b) - c) * v).astype(np.float32) for a, b, c, v in zip(lo, hi, c_vox, voxel, strict=True)]
        m = rotation_matrix(spec.rotation_deg) / np.asarray(spec.axes)[None, :]
        r2 = np.zeros(bshape, dtype=np.float32)
        for k in range(3):
            qk = (offsets[0] * np.float32(m[0, k]))[:, None, None] + (offsets[1] * np.float32(m[1, k]))[None, :, None]
            qk = qk + (offsets[2] * np.float32(m[2, k]))[None, None, :]
            qk *= qk
            r2 += qk
        r = np.sqrt(r2, out=r2)
        r_core = r * (1.0 + 0.18 * smooth_noise(rng, bshape))
        r_oed = r * (1.0 + 0.30 * smooth_noise(rng, bshape, ctrl=8))
        rim_noise = smooth_noise(rng, bshape, ctrl=7)
        g, w, c = gm[box], wm[box], csf[box]
        brain = (g + w) > 0.35
        intracranial = (g + w + c) > 0.5
        rc = spec.core_radius_mm
        rn = rc * spec.necrosis_ratio
        core = (r_core < rc) & intracranial
        necrotic = core & (r_core < rn)
        rim = core & ~necrotic
        if spec.enhancing:
            cut = np.quantile(rim_noise[rim], 1.0 - spec.rim_completeness) if rim.any() else 0.0
            enhancing = rim & (rim_noise >= cut)
        else:
            enhancing = np.zeros_like(rim)
        oedema = (r_oed < spec.oedema_radius_mm * (0.5 + 0.5 * np.clip(w / np.maximum(g + w, 1e-3), 0, 1))) & brain
        new = np.zeros(bshape, dtype=np.uint8)
        new[oedema] = 2
        new[core] = 1
        new[enhancing] = 3
        old = labels[box]
        labels[box] = np.where(_PRIORITY[new] > _PRIORITY[old], new, old)
    if not labels.any():
        return labels, None, None
    sigma = 0.6 / float(np.mean(voxel))
    nz = np.argwhere(labels > 0)
    lo = np.maximum(nz.min(axis=0) - 4, 0)
    hi = np.minimum(nz.max(axis=0) + 5, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    fractions = np.stack(
        [ndi.gaussian_filter((labels[box] == value).astype(np.float32), max(sigma, 0.3)) for value in (1, 2, 3)]
    )
    return labels, fractions, box


def regions(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of the BraTS regions WT, TC and ET.

    Parameters
    ----------
    labels : numpy.ndarray
        BraTS label map.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"WT": ..., "TC": ..., "ET": ...}``.
    """
    return {name: np.isin(labels, values) for name, values in REGIONS.items()}
