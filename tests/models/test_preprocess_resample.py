"""``models.preprocess.resample``: channels onto another grid, exact in physical space.

A field linear in world coordinates is reproduced exactly by trilinear interpolation, so
resampling one from an oblique, anisotropic source grid onto a differently oriented
destination grid must give the field's own values at the destination's voxel centres
(inside the source's field of view) and zeros outside it.
"""

from __future__ import annotations

import numpy as np
import torch

from models.preprocess import resample


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    r = np.eye(3)
    a, b = [k for k in range(3) if k != axis]
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def test_linear_field_is_reproduced_on_an_oblique_grid() -> None:
    torch.set_num_threads(2)
    src_shape = (40, 36, 12)
    src = np.eye(4)
    src[:3, :3] = _rotation(0, 12.0) @ np.diag([1.1, 0.9, 4.0])
    src[:3, 3] = [-20.0, -15.0, -22.0]
    dst_shape = (17, 21, 19)
    dst = np.eye(4)
    dst[:3, :3] = _rotation(2, -30.0) @ np.diag([2.0, 1.5, 2.5])
    dst[:3, 3] = [-10.0, -12.0, -18.0]
    coef = np.array([0.7, -1.3, 0.4])
    field = (_world(src, src_shape) @ coef + 5.0).reshape(src_shape).astype(np.float32)
    two = np.stack([field, 2 * field])  # two channels, resampled together

    out = resample(two, src, dst_shape, dst).numpy()

    assert out.shape == (2, *dst_shape)
    world = _world(dst, dst_shape)
    expected = (world @ coef + 5.0).reshape(dst_shape)
    vox = (world - src[:3, 3]) @ np.linalg.inv(src[:3, :3]).T  # source voxel coordinates
    inside = np.all((vox >= 0.01) & (vox <= np.array(src_shape) - 1.01), axis=1).reshape(dst_shape)
    outside = np.any((vox < -1.01) | (vox > np.array(src_shape) + 0.01), axis=1).reshape(dst_shape)
    assert inside.sum() > 500 and outside.sum() > 500
    assert np.abs(out[0][inside] - expected[inside]).max() < 1e-2
    assert np.abs(out[1][inside] - 2 * expected[inside]).max() < 2e-2
    assert np.all(out[:, outside] == 0.0)
