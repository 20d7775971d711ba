"""Patch masks for masked-image modelling, and losses restricted to masked voxels.

Masks are boolean tensors shaped ``(B, 1, *spatial)`` where ``True`` marks a hidden
voxel. They are drawn on a coarse grid of patches (SimMIM / MAE style) and upsampled, so a
masked region is always whole patches. Works for 2D ``(B, C, H, W)`` and 3D
``(B, C, D, H, W)`` inputs alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["apply_mask", "masked_mse", "random_patch_mask"]


def random_patch_mask(
    batch: int,
    spatial: Sequence[int],
    patch: int | Sequence[int],
    ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw a random mask that hides ``ratio`` of the patches of each sample.

    Parameters
    ----------
    batch : int
        Number of samples.
    spatial : sequence of int
        Spatial shape of the image (2 or 3 values).
    patch : int or sequence of int
        Patch edge in voxels; each spatial size must be a multiple of it.
    ratio : float
        Fraction of patches hidden, in ``[0, 1)``.
    generator : torch.Generator, optional
        Source of randomness (CPU generator).
    device : torch.device or str
        Device of the returned mask.

    Returns
    -------
    torch.Tensor
        Boolean mask of shape ``(batch, 1, *spatial)``; ``True`` = hidden.

    Raises
    ------
    ValueError
        If ``ratio`` is outside ``[0, 1)`` or a spatial size is not a multiple of the patch.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1); got {ratio}.")
    spatial = tuple(int(s) for s in spatial)
    patches = (int(patch),) * len(spatial) if isinstance(patch, int) else tuple(int(p) for p in patch)
    if len(patches) != len(spatial):
        raise ValueError(f"mask patch {patches} has not one value per spatial dimension of {spatial}.")
    for s, p in zip(spatial, patches, strict=True):
        if p <= 0 or s % p:
            raise ValueError(f"image size {spatial} is not a multiple of the mask patch {patches}.")
    grid = tuple(s // p for s, p in zip(spatial, patches, strict=True))
    n = 1
    for g in grid:
        n *= g
    k = round(ratio * n)
    scores = torch.rand(batch, n, generator=generator)
    order = scores.argsort(dim=1)
    coarse = torch.zeros(batch, n, dtype=torch.bool)
    if k > 0:
        coarse.scatter_(1, order[:, :k], True)
    mask = coarse.view(batch, 1, *grid)
    for axis, p in enumerate(patches):
        mask = mask.repeat_interleave(p, dim=2 + axis)
    return mask.to(device)


def apply_mask(x: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Return ``x`` with masked voxels set to ``fill`` in every channel.

    Parameters
    ----------
    x : torch.Tensor
        Image ``(B, C, *spatial)``.
    mask : torch.Tensor
        Boolean mask ``(B, 1, *spatial)``.
    fill : float
        Value written into hidden voxels.

    Returns
    -------
    torch.Tensor
        A new tensor; ``x`` is not modified.
    """
    return x.masked_fill(mask.expand_as(x), fill)


def masked_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    channels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error over masked voxels (and present channels only).

    Parameters
    ----------
    pred, target : torch.Tensor
        ``(B, C, *spatial)`` prediction and target.
    mask : torch.Tensor
        Boolean ``(B, 1, *spatial)``; the loss counts voxels where it is ``True``.
    channels : torch.Tensor, optional
        Boolean or 0/1 ``(B, C)``; channels with 0 (sequence not acquired) are ignored.

    Returns
    -------
    torch.Tensor
        Scalar loss; 0 (with gradient) when nothing is selected.
    """
    weight = mask.to(pred.dtype).expand_as(pred)
    if channels is not None:
        shape = (*channels.shape, *([1] * (pred.ndim - 2)))
        weight = weight * channels.to(pred.dtype).view(shape)
    total = weight.sum()
    err = (pred - target) ** 2 * weight
    return err.sum() / total.clamp_min(1.0)
