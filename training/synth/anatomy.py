"""Random subject anatomy: head pose, scaling, smooth deformation and tumour mass effect.

One sampling grid maps every output voxel to a template position; the template tissue
maps are then warped in one pass (``torch.nn.functional.grid_sample``, trilinear). The
grid is computed on a coarse lattice (every ``coarse_step`` voxels) and upsampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["MassEffect", "Pose", "WarpGrid", "draw_pose", "output_grid", "rotation_matrix", "sampling_grid", "warp_maps"]

#: Centre of rotation and scaling in template RAS (mm), roughly the middle of the head.
HEAD_CENTRE_RAS: tuple[float, float, float] = (0.0, -18.0, 5.0)


@dataclass(frozen=True)
class MassEffect:
    """Radial push of tissue away from a tumour centre (output RAS, mm)."""

    centre_ras: tuple[float, float, float]
    radius_mm: float
    strength: float  # 0..0.8: fraction by which tissue at the centre is displaced


@dataclass(frozen=True)
class Pose:
    """Where and how the template head lies in the scanner, and its shape variation."""

    rotation_deg: tuple[float, float, float]
    scale: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    deformation_mm: float
    deformation_spacing_mm: float
    deformation_seed: int
    mass_effects: tuple[MassEffect, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready parameters."""
        return asdict(self)


@dataclass
class WarpGrid:
    """A sampling grid on a coarse lattice (every ``step`` output voxels).

    ``coarse`` is float32 ``(1, 3, nc0, nc1, nc2)`` with channels (k, j, i) in
    ``grid_sample``'s normalised coordinates (align_corners=True).
    """

    coarse: Any
    step: int
    out_shape: tuple[int, int, int]

    def at(self, sub: int = 1, crop: bool = True) -> Any:
        """The grid every ``sub`` output voxels, shape ``(1, n0, n1, n2, 3)``.

        Parameters
        ----------
        sub : int
            1 for the full grid, 2 for every other voxel (``step`` must be a multiple).
        crop : bool
            Crop to the output shape (only meaningful for ``sub == 1``).

        Returns
        -------
        torch.Tensor
            The grid, channels last.
        """
        import torch

        if self.step % sub:
            raise ValueError(f"sub-sampling {sub} does not divide the coarse step {self.step}.")
        nc = self.coarse.shape[2:]
        size = [(c - 1) * (self.step // sub) + 1 for c in nc]
        fine = torch.nn.functional.interpolate(self.coarse, size=size, mode="trilinear", align_corners=True)
        if crop and sub == 1:
            fine = fine[:, :, : self.out_shape[0], : self.out_shape[1], : self.out_shape[2]]
        return fine.permute(0, 2, 3, 4, 1).contiguous()

    def box(self, lo: Sequence[int], hi: Sequence[int]) -> tuple[tuple[slice, ...], Any]:
        """The full-resolution grid over the output box spanned by coarse nodes ``lo..hi``.

        Parameters
        ----------
        lo, hi : sequence of int
            First and last coarse node (inclusive) per axis.

        Returns
        -------
        tuple
            ``(box, grid)``: the output slices and the grid over them, channels last;
            equal to ``at(1)[:, box...]`` but interpolated over the box only.
        """
        import torch

        sub = self.coarse[:, :, lo[0]: hi[0] + 1, lo[1]: hi[1] + 1, lo[2]: hi[2] + 1]
        size = [(b - a) * self.step + 1 for a, b in zip(lo, hi, strict=True)]
        fine = torch.nn.functional.interpolate(sub, size=size, mode="trilinear", align_corners=True)
        box = tuple(slice(a * self.step, min(a * self.step + n, m)) for a, n, m in zip(lo, size, self.out_shape, strict=True))
        fine = fine[:, :, : box[0].stop - box[0].start, : box[1].stop - box[1].start, : box[2].stop - box[2].start]
        return box, fine.permute(0, 2, 3, 4, 1).contiguous()


def rotation_matrix(rotation_deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation about RAS x (pitch), y (roll) then z (yaw), degrees; 3x3."""
    ax, ay, az = np.deg2rad(rotation_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def draw_pose(rng: np.random.Generator, *, deformation_mm: float = 2.5) -> Pose:
    """Draw a random head pose and shape.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    deformation_mm : float
        Standard deviation of the smooth displacement field.

    Returns
    -------
    Pose
        Rotation within +-10 degrees pitch, +-6 roll, +-8 yaw; global scale 0.9-1.1 with
        +-4 % per axis; translation within about +-10 mm.
    """
    rot = (float(rng.uniform(-10, 10)), float(rng.uniform(-6, 6)), float(rng.uniform(-8, 8)))
    g = float(rng.uniform(0.9, 1.1))
    scale = tuple(float(g * rng.uniform(0.96, 1.04)) for _ in range(3))
    trans = (float(rng.uniform(-6, 6)), float(rng.uniform(-10, 10)), float(rng.uniform(-10, 10)))
    return Pose(
        rotation_deg=rot,
        scale=(scale[0], scale[1], scale[2]),
        translation_mm=trans,
        deformation_mm=float(deformation_mm * rng.uniform(0.5, 1.5)),
        deformation_spacing_mm=float(rng.uniform(20.0, 32.0)),
        deformation_seed=int(rng.integers(0, 2**31 - 1)),
    )


def output_grid(template_shape: tuple[int, int, int], template_affine: np.ndarray, voxel_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS affine of the output grid: the template field of view at ``voxel_mm``.

    Parameters
    ----------
    template_shape : tuple of int
        Template grid shape (1 mm voxels).
    template_affine : numpy.ndarray
        Template voxel-to-RAS matrix.
    voxel_mm : float
        Output voxel size.

    Returns
    -------
    tuple
        ``(shape, affine)``.
    """
    if voxel_mm == 1.0:
        return template_shape, template_affine.copy()
    extent = np.asarray(template_shape, dtype=np.float64)
    shape = tuple(int(np.ceil(e / voxel_mm)) for e in extent)
    affine = template_affine.copy()
    affine[:3, :3] = template_affine[:3, :3] * voxel_mm
    corner = template_affine[:3, :3] @ np.full(3, -0.5) + template_affine[:3, 3]
    affine[:3, 3] = corner + affine[:3, :3] @ np.full(3, 0.5)
    return (shape[0], shape[1], shape[2]), affine


def _pose_inverse_points(points_ras: np.ndarray, pose: Pose) -> np.ndarray:
    """Map scanner (output) RAS points, shape (..., 3), to template RAS."""
    c = np.asarray(HEAD_CENTRE_RAS)
    r = rotation_matrix(pose.rotation_deg)
    s = np.asarray(pose.scale)
    q = points_ras - c - np.asarray(pose.translation_mm)
    q = q @ r  # R^T applied to row vectors
    return q / s + c


def pose_forward(point_template_ras: np.ndarray, pose: Pose) -> np.ndarray:
    """Map a template RAS point to scanner RAS (inverse of the sampling map, no deformation)."""
    c = np.asarray(HEAD_CENTRE_RAS)
    r = rotation_matrix(pose.rotation_deg)
    return r @ ((np.asarray(point_template_ras) - c) * np.asarray(pose.scale)) + c + np.asarray(pose.translation_mm)


def sampling_grid(
    out_shape: tuple[int, int, int],
    out_affine: np.ndarray,
    template_shape: tuple[int, int, int],
    template_affine: np.ndarray,
    pose: Pose,
    coarse_step: int = 4,
) -> WarpGrid:
    """Return the grid mapping output voxels to template positions.

    Parameters
    ----------
    out_shape, out_affine : tuple, numpy.ndarray
        Output grid.
    template_shape, template_affine : tuple, numpy.ndarray
        Template grid.
    pose : Pose
        Head pose, deformation and mass effects.
    coarse_step : int
        The grid is computed every ``coarse_step`` output voxels and upsampled.

    Returns
    -------
    WarpGrid
        The coarse grid; :meth:`WarpGrid.at` gives it at full or half resolution.
    """
    import torch
    from scipy import ndimage as ndi

    nc = [int(np.ceil((n - 1) / coarse_step)) + 1 for n in out_shape]
    idx = np.stack(np.meshgrid(*[np.arange(n) * coarse_step for n in nc], indexing="ij"), axis=-1)
    pts = idx.astype(np.float64) @ out_affine[:3, :3].T + out_affine[:3, 3]
    for me in pose.mass_effects:
        d = pts - np.asarray(me.centre_ras)
        r2 = np.sum(d * d, axis=-1, keepdims=True)
        pts = np.asarray(me.centre_ras) + d * (1.0 - me.strength * np.exp(-r2 / me.radius_mm**2))
    tpl = _pose_inverse_points(pts, pose)
    if pose.deformation_mm > 0:
        step_mm = abs(float(out_affine[0, 0])) * coarse_step
        ctrl = [max(int(np.ceil(n * step_mm / pose.deformation_spacing_mm)) + 1, 2) for n in nc]
        drng = np.random.default_rng(pose.deformation_seed)
        for axis in range(3):
            field = drng.standard_normal(ctrl) * pose.deformation_mm
            up = ndi.zoom(field, [n / c for n, c in zip(nc, ctrl, strict=True)], order=3, mode="nearest", grid_mode=True)
            tpl[..., axis] += up[: nc[0], : nc[1], : nc[2]]
    vox = (tpl - template_affine[:3, 3]) @ np.linalg.inv(template_affine[:3, :3]).T
    sizes = np.asarray(template_shape, dtype=np.float64)
    norm = 2.0 * vox / (sizes - 1.0) - 1.0
    coarse = torch.from_numpy(norm[..., ::-1].astype(np.float32).copy()).permute(3, 0, 1, 2)[None]
    return WarpGrid(coarse=coarse, step=coarse_step, out_shape=out_shape)


def warp_maps(brain: np.ndarray, head: np.ndarray, warp: WarpGrid,
              brain_box: tuple[tuple[int, int, int], tuple[int, int, int]]) -> np.ndarray:
    """Sample template maps through a warp; zero outside the template.

    The brain channels are sampled at full resolution but only over the output box that
    maps into the template's brain box; the head channels (tissues outside the brain) are
    sampled at half resolution and upsampled.

    Parameters
    ----------
    brain : numpy.ndarray
        float32 template brain maps ``(Cb, ni, nj, nk)``.
    head : numpy.ndarray
        float32 template head maps ``(Ch, ni, nj, nk)``.
    warp : WarpGrid
        From :func:`sampling_grid`.
    brain_box : tuple
        ``(lo, hi)`` template voxel indices (hi exclusive) outside which the brain
        channels are zero.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(Cb + Ch,) + output shape``, brain channels first.
    """
    import torch
    import torch.nn.functional as F

    shape = warp.out_shape
    n_fine = brain.shape[0]
    out = np.zeros((n_fine + head.shape[0], *shape), dtype=np.float32)
    sizes = np.asarray(brain.shape[1:], dtype=np.float64)
    lo = 2.0 * (np.asarray(brain_box[0]) - 1.0) / (sizes - 1.0) - 1.0
    hi = 2.0 * (np.asarray(brain_box[1])) / (sizes - 1.0) - 1.0
    coarse = warp.coarse[0].numpy()[::-1]  # (3 = i, j, k normalised, nc...)
    inside = np.ones(coarse.shape[1:], dtype=bool)
    for axis in range(3):
        inside &= (coarse[axis] >= lo[axis]) & (coarse[axis] <= hi[axis])
    if inside.any():
        idx = np.argwhere(inside)
        lo_node = np.maximum(idx.min(axis=0) - 1, 0)
        hi_node = np.minimum(idx.max(axis=0) + 1, np.asarray(inside.shape) - 1)
        box, fine = warp.box([int(v) for v in lo_node], [int(v) for v in hi_node])
        _sample_into(out[(slice(0, n_fine), *box)], brain, fine)
    if head.shape[0]:
        half = warp.at(2, crop=False)
        low_np = np.empty((head.shape[0], *half.shape[1:4]), dtype=np.float32)
        _sample_into(low_np, head, half)
        low = torch.from_numpy(low_np)[None]
        size = [(n - 1) * 2 + 1 for n in low.shape[2:]]
        up = F.interpolate(low, size=size, mode="trilinear", align_corners=True)
        out[n_fine:] = up[0, :, : shape[0], : shape[1], : shape[2]].numpy()
    return out


def _sample_into(out: np.ndarray, maps: np.ndarray, grid: Any) -> None:
    """``grid_sample`` (trilinear, zeros outside) of ``maps`` at ``grid``, written into ``out``.

    torch's 3-D CPU sampler runs on one thread for a batch of one; the grid is cut into
    slabs along its first axis, sampled on parallel threads (torch releases the GIL).
    Every output voxel depends only on its own grid point, so the result does not depend
    on the number of slabs.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch
    import torch.nn.functional as F

    src = torch.from_numpy(maps)[None]
    n = int(grid.shape[1])
    threads = max(1, min(torch.get_num_threads(), 4, n))
    edges = np.linspace(0, n, threads + 1).astype(int)

    def slab(i: int) -> None:
        a, b = int(edges[i]), int(edges[i + 1])
        res = F.grid_sample(src, grid[:, a:b], mode="bilinear", padding_mode="zeros", align_corners=True)
        out[:, a:b] = res[0].numpy()

    if threads == 1:
        slab(0)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(slab, range(threads)))
