"""Hard negatives: where a bundle calls healthy tissue tumour, training crops are centred more often.

Negative crops (``[train] pos_neg``) are drawn uniformly over tumour-free head tissue, where most
voxels are easy. :func:`mine` runs a bundle (usually the one being fine-tuned) over each training
subject with several input subsets (all sequences, FLAIR alone, T1C alone...) through the
inference engine itself and keeps the voxels it calls tumour where the label is background: its
false positives. :class:`HardNegativeIndicesd` then draws ``fraction`` of the negative crop centres
from them (``[train] hard_negatives``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import MapTransform

__all__ = ["HardNegativeIndicesd", "mine"]

log = logging.getLogger(__name__)


def _load_subject(item: Mapping[str, Any], channels: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The item's sequences on its reference grid (label map's, else the first sequence's), and its label."""
    import nibabel as nib

    from training.healthy import load_on_grid

    ref_path = item.get("labels") or next(iter(item["sequences"].values()))
    ref: Any = nib.load(ref_path)
    shape, affine = ref.shape[:3], ref.affine
    arrays, _, _ = load_on_grid(item["sequences"], channels, grid=(shape, affine))
    if item.get("labels") and not item.get("all_background"):
        label = np.asarray(ref.dataobj).astype(np.int16)
        for src, dst in (item.get("label_map") or {}).items():
            label[label == int(src)] = int(dst)
    else:
        label = np.zeros(shape, dtype=np.int16)
    return arrays, affine, label


def mine(bundle: str | Path, items: Sequence[Mapping[str, Any]], channels: Sequence[str],
         subsets: Sequence[str], out_dir: str | Path, shift_average: Sequence[int] | None = None) -> dict[str, str]:
    """Run ``bundle`` on every item for each subset; save its false positives; return ``{id: path}``.

    Parameters
    ----------
    bundle : str or Path
        The bundle folder (or registered name) to mine with.
    items : sequence of dict
        Dataset items (:func:`training.datasets.subject_items`, :func:`~training.datasets.negative_items`);
        an id listed several times is mined once.
    channels : sequence of str
        The model's channels.
    subsets : sequence of str
        ``"all"`` (every sequence the subject has) or channel names joined with ``+``.
    out_dir : str or Path
        Where the masks go (``<id>.nii.gz``, uint8 on the item's reference grid); a mask already
        there is reused.
    shift_average : sequence of int, optional
        The tilings to average (model-grid voxel shifts, as the card's
        ``preprocessing.shift_average``) in place of the bundle's own: ``[0]`` mines about four
        times faster than a four-tiling card, on the same weights and preprocessing.

    Returns
    -------
    dict of str to str
        Item id to its mask, for items with at least one false-positive voxel.
    """
    import nibabel as nib

    from models.engine import get_engine
    from models.engine import shift_average as checked_shifts

    engine = get_engine(str(bundle), device="cpu")
    if shift_average is not None:  # a copy: the cached engine others share keeps the card's tilings
        engine = copy.copy(engine)
        engine.shifts = checked_shifts(engine.bundle.name, list(shift_average))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, str] = {}
    seen: set[str] = set()
    total_ml = 0.0
    for item in items:
        iid = str(item["id"])
        if iid in seen:
            continue
        seen.add(iid)
        path = out / f"{iid}.nii.gz"
        if not path.is_file():
            arrays, affine, label = _load_subject(item, channels)
            fp = np.zeros(label.shape, dtype=bool)
            for subset in subsets:
                keep = list(arrays) if subset == "all" else [s for s in subset.split("+") if s in arrays]
                if not keep or (subset != "all" and len(keep) != len(subset.split("+"))):
                    continue
                pred = engine.predict({k: arrays[k] for k in keep}, affine)
                fp |= (np.asarray(pred.labels) > 0) & (label == 0)
            nib.save(nib.Nifti1Image(fp.astype(np.uint8), affine), str(path))
            voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
            total_ml += float(fp.sum()) * voxel_ml
            log.info("hard negatives of %s: %.1f mL", iid, float(fp.sum()) * voxel_ml)
            has_fp = bool(fp.any())
        else:  # mined by an earlier run
            saved: Any = nib.load(str(path))
            has_fp = bool(np.asarray(saved.dataobj).any())
        if has_fp:
            found[iid] = str(path)
    log.info("hard negatives: %d of %d subjects have false positives (%.0f mL mined now)", len(found), len(seen),
             total_ml)
    return found


class HardNegativeIndicesd(MapTransform):
    """Make ``fraction`` of the negative crop centres come from the ``hard`` mask.

    Runs in the cache after ``FgBgToIndicesd`` (which wrote ``label_bg_indices``: tumour-free
    head voxels): the hard voxels (``hard > 0`` and background) are appended, repeated so that
    they make up about ``fraction`` of the list that ``RandCropByPosNegLabeld`` draws its negative
    centres from uniformly. ``hard`` is then dropped. Items without ``hard`` are unchanged.

    Parameters
    ----------
    fraction : float
        Share of negative crop centres on hard voxels (0 < fraction < 1).
    """

    def __init__(self, fraction: float = 0.5) -> None:
        super().__init__(keys=["hard"], allow_missing_keys=True)
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"hard-negative fraction must be between 0 and 1, got {fraction!r}.")
        self.fraction = float(fraction)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Extend ``label_bg_indices`` with the hard voxels."""
        d = dict(data)
        hard = d.pop("hard", None)
        if hard is None:
            return d
        mask = np.asarray(hard)[0] > 0
        mask &= np.asarray(d["label"])[0] == 0
        idx = np.flatnonzero(mask.ravel())
        bg = np.asarray(d["label_bg_indices"])
        if idx.size and bg.size:
            repeat = int(np.ceil(self.fraction / (1.0 - self.fraction) * bg.size / idx.size))
            d["label_bg_indices"] = np.concatenate([bg, np.tile(idx.astype(bg.dtype), max(1, repeat))])
        elif idx.size:
            d["label_bg_indices"] = idx
        return d
