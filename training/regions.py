"""BraTS evaluation regions and per-region metrics (Dice, HD95).

Labels follow the BraTS convention used everywhere in mrinode: 1 necrotic core, 2 oedema,
3 enhancing tumour. Regions: WT (whole tumour, 1+2+3), TC (tumour core, 1+3), ET (3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["REGIONS", "dice", "hd95", "mask_scores", "region_masks", "region_scores"]

#: Region name to the label values it holds.
REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


def region_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Return the WT, TC and ET boolean masks of a label map."""
    return {name: np.isin(labels, values) for name, values in REGIONS.items()}


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    a, b = int(pred.sum()), int(ref.sum())
    if a + b == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / (a + b)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance in mm (MONAI); 0 when both are empty, NaN when one is."""
    if not pred.any() and not ref.any():
        return 0.0
    if not pred.any() or not ref.any():
        return float("nan")
    import torch
    from monai.metrics import compute_hausdorff_distance

    p = torch.from_numpy(pred[None, None].astype(np.float32))
    r = torch.from_numpy(ref[None, None].astype(np.float32))
    value = compute_hausdorff_distance(p, r, percentile=95, spacing=[float(s) for s in spacing])
    return float(value.item())


def region_scores(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """Return ``{"dice_WT": ..., "dice_TC": ..., "dice_ET": ...}`` and, with ``spacing``, ``hd95_*``."""
    return mask_scores(region_masks(pred), region_masks(ref), spacing)


def mask_scores(pm: dict[str, np.ndarray], rm: dict[str, np.ndarray],
                spacing: Sequence[float] | None = None) -> dict[str, float]:
    """:func:`region_scores` of masks already made by :func:`region_masks` (prediction, reference)."""
    out: dict[str, float] = {}
    for name in REGIONS:
        out[f"dice_{name}"] = dice(pm[name], rm[name])
        if spacing is not None:
            out[f"hd95_{name}"] = hd95(pm[name], rm[name], spacing)
    return out
