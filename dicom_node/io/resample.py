"""Resampling a volume onto another volume's grid in physical (patient) space."""

from __future__ import annotations

import logging

import numpy as np

from dicom_node.io.volume import Volume

__all__ = ["resample_to"]

log = logging.getLogger(__name__)


def resample_to(moving: Volume, reference: Volume, order: int = 1, cval: float = 0.0) -> Volume:
    """Resample ``moving`` onto the voxel grid of ``reference``.

    Both affines map voxels to the same patient coordinates (scanner space), so no
    registration is done: each reference voxel centre is looked up in ``moving``.

    Parameters
    ----------
    moving : Volume
        The volume to resample.
    reference : Volume
        The volume whose grid (shape, affine) the result takes.
    order : int
        Spline order: 0 (nearest; use for label volumes), 1 (linear, default), 3 (cubic).
    cval : float
        Value outside ``moving``'s field of view.

    Returns
    -------
    Volume
        ``reference``'s shape and affine, ``moving``'s series UID, metadata and split.
        It has no DICOM source images of its own (``slice_refs`` and ``headers`` are
        empty): write results on ``reference``. Label data keep their dtype.

    Raises
    ------
    ValueError
        ``order`` outside 0..5.
    """
    from scipy import ndimage

    if order not in range(6):
        raise ValueError(f"resample_to: order must be 0..5, got {order}.")
    if (
        moving.frame_of_reference_uid
        and reference.frame_of_reference_uid
        and moving.frame_of_reference_uid != reference.frame_of_reference_uid
    ):
        log.warning(
            "%s and %s have different frames of reference; resampling assumes they share scanner space.",
            moving.name,
            reference.name,
        )
    matrix = np.linalg.inv(moving.affine) @ reference.affine
    same_grid = moving.shape == reference.shape and np.allclose(matrix, np.eye(4), atol=1e-6)
    if same_grid:
        data = moving.data.copy()
    else:
        src = moving.data
        out_dtype = src.dtype if order == 0 else np.float32
        work = src if order == 0 else src.astype(np.float32, copy=False)
        data = ndimage.affine_transform(
            work,
            matrix[:3, :3],
            offset=matrix[:3, 3],
            output_shape=reference.shape,
            order=order,
            mode="constant",
            cval=cval,
            prefilter=order > 1,
        ).astype(out_dtype, copy=False)
    return Volume(
        data=data,
        affine=reference.affine.copy(),
        series_uid=moving.series_uid,
        frame_of_reference_uid=reference.frame_of_reference_uid,
        slice_refs=[],
        headers=[],
        meta=dict(moving.meta),
        split=moving.split,
        label=moving.label,
    )
