"""Preprocessing shared by training and inference: RAS model grids, resampling, z-score.

Training (:mod:`training.datasets`) and the inference engine (:mod:`models.engine`) both go
through these functions, so a model sees the same intensities and geometry in both.
Arrays are in nibabel index order ``(i, j, k)`` with a 4x4 voxel-to-RAS affine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["NORMALIZATIONS", "OOD_QUANTILES", "foreground_mask", "foreground_quantiles", "normalize", "ood_score",
           "ras_grid", "resample", "zscore_foreground"]

#: Quantile levels at which :func:`foreground_quantiles` describes a normalised channel's head intensities.
OOD_QUANTILES = tuple(round(0.05 * i, 2) for i in range(1, 20))

#: Card ``preprocessing.normalize`` values: ``zscore_foreground`` z-scores every channel over the union of
#: the present channels' foregrounds (so a channel's values depend on which others are present);
#: ``zscore_per_channel`` z-scores every channel over its own foreground (the same values for any subset).
NORMALIZATIONS = ("zscore_foreground", "zscore_per_channel")


def ras_grid(shape: Sequence[int], affine: np.ndarray, spacing: Sequence[float]) -> tuple[tuple[int, int, int], np.ndarray]:
    """Return an axis-aligned RAS grid of ``spacing`` mm covering a volume.

    Parameters
    ----------
    shape : sequence of int
        The volume's ``(ni, nj, nk)``.
    affine : numpy.ndarray
        Its voxel-to-RAS affine.
    spacing : sequence of float
        The model grid's voxel size in mm along R, A, S.

    Returns
    -------
    tuple
        ``(shape, affine)`` of the model grid (axes R, A, S; centred on the volume).
    """
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    world = (np.asarray(affine, dtype=np.float64) @ corners.T).T[:, :3]
    lo, hi = world.min(axis=0), world.max(axis=0)
    sp = np.asarray(spacing, dtype=np.float64)
    n = np.maximum(1, np.ceil((hi - lo) / sp - 1e-6).astype(int) + 1)
    centre = (lo + hi) / 2.0
    origin = centre - (n - 1) * sp / 2.0
    out = np.eye(4)
    out[:3, :3] = np.diag(sp)
    out[:3, 3] = origin
    return (int(n[0]), int(n[1]), int(n[2])), out


def resample(
    data: np.ndarray | torch.Tensor,
    src_affine: np.ndarray,
    dst_shape: Sequence[int],
    dst_affine: np.ndarray,
    mode: str = "bilinear",
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Resample channels onto another grid (zeros outside the source).

    Parameters
    ----------
    data : numpy.ndarray or torch.Tensor
        ``(C, ni, nj, nk)`` source channels.
    src_affine, dst_affine : numpy.ndarray
        Voxel-to-world affines of source and destination.
    dst_shape : sequence of int
        Destination ``(ni, nj, nk)``.
    mode : str
        ``"bilinear"`` (trilinear) or ``"nearest"``.
    device : str or torch.device
        Where to compute.

    Returns
    -------
    torch.Tensor
        ``(C, *dst_shape)`` float32.
    """
    src = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data)
    src = src.to(device=device, dtype=torch.float32)
    if src.ndim != 4:
        raise ValueError(f"resample expects (C, i, j, k) data; got shape {tuple(src.shape)}.")
    m = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)
    src_shape = src.shape[1:]
    # Normalised coordinates for align_corners=True: -1 at index 0, +1 at index n-1, on both sides;
    # theta maps the destination's normalised (k, j, i) to the source's, as affine_grid wants.
    to_norm = np.diag([2.0 / max(s - 1, 1) for s in src_shape] + [1.0])
    to_norm[:3, 3] = -1.0
    half = [(int(s) - 1) / 2.0 for s in dst_shape]
    from_norm = np.diag([*half, 1.0])
    from_norm[:3, 3] = half
    kji = np.eye(4)[[2, 1, 0, 3]]
    theta = (kji @ to_norm @ m @ from_norm @ kji)[:3]
    grid = F.affine_grid(torch.as_tensor(theta, dtype=torch.float32, device=device)[None],
                         [1, 1, *(int(s) for s in dst_shape)], align_corners=True)
    out = F.grid_sample(src[None], grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out[0]


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2.0
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


def foreground_mask(x: np.ndarray, present: Sequence[bool]) -> np.ndarray:
    """Return the head/brain foreground: voxels above Otsu's threshold in any present channel.

    Parameters
    ----------
    x : numpy.ndarray
        ``(C, ...)`` channels (raw intensities).
    present : sequence of bool
        Which channels hold an image.

    Returns
    -------
    numpy.ndarray
        Boolean mask of shape ``x.shape[1:]``.
    """
    mask = np.zeros(x.shape[1:], dtype=bool)
    for c, ok in enumerate(present):
        if not ok:
            continue
        ch = x[c]
        pos = ch[ch > 0]
        if pos.size < 16:
            continue
        sample = pos[:: max(1, pos.size // 200_000)]
        mask |= ch > _otsu(sample)
    return mask


def zscore_foreground(x: np.ndarray, present: Sequence[bool], clip: float = 6.0, per_channel: bool = False) -> np.ndarray:
    """Z-score each present channel over the foreground; absent channels become zeros.

    Parameters
    ----------
    x : numpy.ndarray
        ``(C, ...)`` channels.
    present : sequence of bool
        Which channels hold an image.
    clip : float
        Normalised values are clipped to ``[-clip, clip]``.
    per_channel : bool
        False: one foreground for all channels (the union of the present channels' Otsu masks).
        True: each channel over its own Otsu foreground, so its values do not depend on which
        other channels are present (training with sequence dropout then sees exactly what
        inference on a subset sees).

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape.
    """
    out = np.zeros(x.shape, dtype=np.float32)
    union = None if per_channel else foreground_mask(x, present)
    for c, ok in enumerate(present):
        if not ok:
            continue
        mask = foreground_mask(x[c : c + 1], [True]) if union is None else union
        if not mask.any():
            mask = np.ones(x.shape[1:], dtype=bool)
        vals = x[c][mask]
        mean, std = float(vals.mean()), float(vals.std())
        out[c] = np.clip((x[c] - mean) / max(std, 1e-6), -clip, clip)
    return out


def normalize(x: np.ndarray, present: Sequence[bool], method: str = "zscore_foreground") -> np.ndarray:
    """Normalise ``(C, ...)`` channels by a card's ``preprocessing.normalize`` method.

    Raises
    ------
    ValueError
        If ``method`` is not one of :data:`NORMALIZATIONS`.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"preprocessing.normalize {method!r} is not one of {', '.join(NORMALIZATIONS)}.")
    return zscore_foreground(x, present, per_channel=method == "zscore_per_channel")


def foreground_quantiles(x: np.ndarray, present: Sequence[bool],
                         levels: Sequence[float] = OOD_QUANTILES) -> dict[int, np.ndarray]:
    """Quantiles of each present normalised channel over its own foreground (the voxels its z-score used).

    Parameters
    ----------
    x : numpy.ndarray
        ``(C, ...)`` normalised channels (:func:`normalize`).
    present : sequence of bool
        Which channels hold an image.
    levels : sequence of float
        Quantile levels in ``(0, 1)``.

    Returns
    -------
    dict of int to numpy.ndarray
        Channel index to its quantiles (channels with no foreground are left out).
    """
    out: dict[int, np.ndarray] = {}
    for c, ok in enumerate(present):
        if not ok:
            continue
        ch = x[c] - x[c].min()  # z-scoring is affine, so Otsu on the shifted channel finds the same foreground
        mask = foreground_mask(ch[None], [True])
        if mask.any():
            out[c] = np.quantile(x[c][mask], list(levels)).astype(np.float64)
    return out


def ood_score(quantiles: dict[int, np.ndarray], reference: dict[int, Sequence[float]]) -> float | None:
    """Out-of-distribution score: the largest mean absolute quantile difference (in SD) of a channel from its reference.

    Parameters
    ----------
    quantiles : dict of int to numpy.ndarray
        An input's :func:`foreground_quantiles`.
    reference : dict of int to sequence of float
        The training data's quantiles per channel, at the same levels.

    Returns
    -------
    float or None
        0 when the normalised head intensities are distributed as in training; None when no
        present channel has a reference.
    """
    scores = [float(np.mean(np.abs(q - np.asarray(reference[c], dtype=np.float64))))
              for c, q in quantiles.items() if c in reference]
    return max(scores) if scores else None
