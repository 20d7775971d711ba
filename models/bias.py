"""Receive-coil bias-field correction of one volume: ITK's N4 (through SimpleITK).

A smooth multiplicative field (the receive coils' sensitivity) brightens parts of a head;
on FLAIR alone a bright patch of cortex then looks like oedema to a network. N4
(Tustison et al., 2010) estimates that field as a B-spline and divides it out. Used by the
engine when a card sets ``preprocessing.bias_correction = "n4"``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

__all__ = ["BIAS_CORRECTIONS", "N4Cache", "fit_mask", "n4_correct"]

#: Card ``preprocessing.bias_correction`` values: ``none`` (default) or ``n4``.
BIAS_CORRECTIONS = ("none", "n4")


def fit_mask(volume: np.ndarray, bright_sd: float = 3.0) -> np.ndarray:
    """The voxels N4 fits the field to: the Otsu foreground less its brightest outliers.

    A tumour's oedema (or any large lesion) brighter than the head's intensities at large is
    left out of the fit, so the smooth field is not bent to flatten it; the field found is
    still applied everywhere.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(i, j, k)`` non-negative intensities.
    bright_sd : float
        Voxels above the foreground's median plus this many robust standard deviations
        (1.4826 x the median absolute deviation) are left out.

    Returns
    -------
    numpy.ndarray
        Boolean mask, ``volume``'s shape.
    """
    from models.preprocess import foreground_mask

    fg = foreground_mask(np.asarray(volume)[None], [True])
    if not np.any(fg):
        return fg
    values = volume[fg]
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    return fg & (volume <= median + bright_sd * spread)


def n4_correct(volume: np.ndarray, spacing: Sequence[float], mask: np.ndarray | None = None,
               shrink: int = 2, iterations: Sequence[int] = (50, 50, 50)) -> np.ndarray:
    """Divide out the receive-coil field that N4 estimates.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(i, j, k)`` intensities (non-negative; a negative minimum is shifted to 0 first).
    spacing : sequence of float
        Voxel size in mm along ``i, j, k`` (sets the B-spline's physical extent).
    mask : numpy.ndarray, optional
        Voxels that inform the fit (default :func:`fit_mask`). The field found is applied
        everywhere.
    shrink : int
        The fit runs on the volume shrunk by this factor (the field is smooth).
    iterations : sequence of int
        Iterations at each fitting level; one level per entry, each doubling the B-spline
        mesh. Three levels (a field smooth over about 50 mm), not N4's default four: chosen on
        the tumour model's selection subjects, where four levels also flattened large tumours.

    Returns
    -------
    numpy.ndarray
        The corrected float32 volume, same shape; ``volume`` itself (as float32) when it is
        empty or the mask is.
    """
    import SimpleITK as sitk  # noqa: N813 (the alias its documentation uses)

    data = np.asarray(volume, dtype=np.float32)
    low = float(data.min()) if data.size else 0.0
    shifted = data - low if low < 0 else data
    if mask is None:
        mask = fit_mask(shifted)
    if not np.any(mask) or not np.any(shifted):
        return data
    # SimpleITK arrays are (k, j, i); its spacing is (i, j, k)
    image = sitk.GetImageFromArray(np.ascontiguousarray(shifted.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    mask_image = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8))
    mask_image.CopyInformation(image)
    small, small_mask = image, mask_image
    if shrink > 1:
        small = sitk.Shrink(image, [shrink] * 3)
        small_mask = sitk.Shrink(mask_image, [shrink] * 3)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(n) for n in iterations])
    n4.Execute(small, small_mask)
    log_field = n4.GetLogBiasFieldAsImage(image)
    field = np.exp(sitk.GetArrayFromImage(log_field).transpose(2, 1, 0)).astype(np.float32)
    out = shifted / np.maximum(field, 1e-6)
    return (out + low if low < 0 else out).astype(np.float32)


class N4Cache:
    """The last few :func:`n4_correct` results, keyed by the input's bytes and spacing.

    The same volume on the same grid is corrected once: an evaluation that tries each
    sequence alone and then all of them together, or a study sent again, does not fit the
    same field twice. The result is the one :func:`n4_correct` gave (a copy), so outputs are
    unchanged.

    Parameters
    ----------
    size : int
        How many corrected volumes are kept (least recently used dropped first).
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.hits = 0
        self._kept: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # one engine may predict on several threads

    def correct(self, volume: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """:func:`n4_correct` of ``volume`` (default mask and settings), from the cache when seen before."""
        data = np.ascontiguousarray(volume, dtype=np.float32)
        digest = hashlib.blake2b(data.tobytes(), digest_size=16)
        digest.update(repr((data.shape, [float(s) for s in spacing])).encode())
        key = digest.digest()
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
                self.hits += 1
                return kept.copy()
        out = n4_correct(data, spacing)  # outside the lock: other volumes need not wait
        with self._lock:
            self._kept[key] = out
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return out.copy()
