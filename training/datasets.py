"""MONAI datasets for segmentation fine-tuning: cached preprocessing, random crops, sequence dropout.

The deterministic part (load every sequence, resample to the model's RAS grid, z-score over
the foreground — the very functions the inference engine uses, from
:mod:`models.preprocess`) runs once per subject inside a ``CacheDataset``; random crops,
flips, intensity jitter and sequence dropout run every epoch.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform

from models.preprocess import foreground_mask, normalize, ras_grid, resample
from training.domain_randomisation import (
    DR_DEFAULTS,
    NormalizeFromSampled,
    RandBackgroundd,
    RandBiasFieldChanneld,
    RandFieldOfViewd,
    RandGreyMatterGaind,
    RandIntensityRemapd,
    RandNoiseFloord,
    RandThickSlicesd,
    domain_randomisation_transforms,
)
from training.manifest import Manifest, ManifestError

__all__ = ["DR_DEFAULTS", "LoadSubjectd", "NormalizeFromSampled", "RandBackgroundd", "RandBiasFieldChanneld",
           "RandFieldOfViewd", "RandGreyMatterGaind", "RandIntensityRemapd", "RandNoiseFloord", "RandThickSlicesd", "SequenceDropoutd",
           "domain_randomisation_transforms", "make_dataset", "negative_items", "subject_items", "train_transforms"]


def subject_items(manifest: Manifest, channels: Sequence[str], require_labels: bool = True) -> list[dict[str, Any]]:
    """Turn manifest subjects into dataset items.

    Raises
    ------
    ManifestError
        If a subject has none of ``channels`` or (with ``require_labels``) no label map.
    """
    items = []
    for s in manifest.subjects:
        seqs = {c: s.sequences[c].path for c in channels if c in s.sequences}
        if not seqs:
            raise ManifestError(f"subject {s.id} has none of the sequences {', '.join(channels)}.")
        if require_labels and not s.labels:
            raise ManifestError(f"subject {s.id} has no label map; fine-tuning needs one.")
        item: dict[str, Any] = {"id": s.id, "sequences": seqs, "labels": s.labels, "label_map": dict(s.label_map)}
        tissue = Path(s.labels).parent / "tissue.nii.gz" if s.labels else None
        if tissue is not None and tissue.is_file():  # the synthetic generator's tissue map, beside its labels
            item["tissue"] = str(tissue)
        items.append(item)
    return items


def negative_items(heads: Mapping[str, Mapping[str, str]], channels: Sequence[str], repeats: int = 1) -> list[dict[str, Any]]:
    """Dataset items for healthy heads without a label map: every voxel is background.

    Parameters
    ----------
    heads : mapping of str to mapping of str to str
        Head id to ``{sequence: path}`` (for example from :func:`training.healthy.real_head_paths`).
    channels : sequence of str
        Sequence per input channel; a head's other sequences are ignored.
    repeats : int
        How many times each head is listed (a head is one subject among hundreds otherwise).

    Raises
    ------
    ManifestError
        If a head has none of ``channels``.
    """
    items = []
    for hid, seqs in heads.items():
        keep = {c: str(p) for c, p in seqs.items() if c in channels}
        if not keep:
            raise ManifestError(f"healthy head {hid} has none of the sequences {', '.join(channels)}.")
        items += [{"id": hid, "sequences": keep, "labels": "", "label_map": {}, "all_background": True}
                  for _ in range(max(1, int(repeats)))]
    return items


class LoadSubjectd(Transform):
    """Load one subject onto the model grid: ``image`` (C, *grid), ``label`` (1, *grid), ``present`` (C,).

    ``head`` (1, *grid, uint8) is the foreground mask the z-score used; training draws its
    negative (tumour-free) crop centres inside it, so that they show normal brain, not air.

    Parameters
    ----------
    channels : sequence of str
        Sequence per input channel.
    spacing : sequence of float
        Model grid spacing in mm (RAS).
    normalization : str
        A :data:`models.preprocess.NORMALIZATIONS` method (the card's ``preprocessing.normalize``).
    raw : bool
        Keep ``image`` in scanner intensities (not normalised) and add ``sample_in`` /
        ``sample_out`` (C, n): random samples of each channel's positive voxels inside and
        outside the head. Domain randomisation then changes the intensities of a crop and of
        the samples alike, and :class:`NormalizeFromSampled` z-scores the crop with the
        statistics that the engine would compute on the whole randomised head.
    sample_size : int
        Voxels per channel in each sample (``raw`` only).
    gm_maps : bool
        With ``raw``: load the item's ``tissue`` map (synthetic subjects' ``tissue.nii.gz``) as
        ``gm`` (1, *grid, uint8 0-255: the grey-matter fraction) and ``sample_gm`` (C, n: the
        fraction at each of ``sample_in``'s voxels), for
        :class:`training.domain_randomisation.RandGreyMatterGaind`. Items without one get neither.
    bias_channels : sequence of str
        Sequences divided by the N4 field fitted to them on the model grid
        (:func:`models.bias.n4_correct`, its default mask and levels), as
        :class:`models.engine.InferenceEngine` does with the card's
        ``preprocessing.bias_correction_channels``: training then sees what inference sees.

    An item with ``all_background`` (:func:`negative_items`) gets a label of zeros on its
    first sequence's grid.
    """

    def __init__(self, channels: Sequence[str], spacing: Sequence[float],
                 normalization: str = "zscore_foreground", raw: bool = False, sample_size: int = 20000,
                 bias_channels: Sequence[str] = (), gm_maps: bool = False) -> None:
        self.channels = list(channels)
        self.gm_maps = bool(gm_maps)
        self.bias_channels = [c for c in bias_channels]
        self.spacing = [float(s) for s in spacing]
        self.normalization = normalization
        self.raw = bool(raw)
        self.sample_size = int(sample_size)

    def __call__(self, item: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load and preprocess ``item`` (from :func:`subject_items`)."""
        import nibabel as nib

        ref_path = item.get("labels") or next(iter(item["sequences"].values()))
        ref: Any = nib.load(ref_path)
        ref_shape = ref.shape[:3]
        grid_shape, grid_affine = ras_grid(ref_shape, ref.affine, self.spacing)
        stack = np.zeros((len(self.channels), *grid_shape), dtype=np.float32)
        present = np.zeros(len(self.channels), dtype=bool)
        for c, name in enumerate(self.channels):
            path = item["sequences"].get(name)
            if not path:
                continue
            img: Any = nib.load(path)
            data = np.asarray(img.dataobj, dtype=np.float32)
            if data.ndim == 4:
                data = data[..., 0]
            stack[c] = resample(data[None], img.affine, grid_shape, grid_affine)[0].numpy()
            if name in self.bias_channels:
                from models.bias import n4_correct

                stack[c] = n4_correct(stack[c], self.spacing)
            present[c] = True
        out: dict[Hashable, Any] = {"id": item["id"], "present": present}
        head = foreground_mask(stack, list(present))
        out["head"] = head[None].astype(np.uint8)
        if self.raw:
            gm = None
            if self.gm_maps and item.get("tissue"):
                from training.synth.tissue import Tissue

                tissue: Any = nib.load(item["tissue"])
                grey = (np.asarray(tissue.dataobj) == int(Tissue.GM)).astype(np.float32)
                gm = resample(grey[None], tissue.affine, grid_shape, grid_affine)[0].numpy()
                out["gm"] = (np.clip(gm, 0.0, 1.0) * 255).round().astype(np.uint8)[None]
            out["image"] = stack
            out["sample_in"], out["sample_out"], sample_gm = _positive_samples(
                stack, present, head, self.sample_size, seed=zlib.crc32(str(item["id"]).encode()), gm=out.get("gm"))
            if sample_gm is not None:
                out["sample_gm"] = sample_gm
        else:
            out["image"] = normalize(stack, list(present), self.normalization)
        if item.get("hard_negatives"):  # training.hard_negatives.mine's mask, on the item's reference grid
            hard: Any = nib.load(item["hard_negatives"])
            out["hard"] = resample(np.asarray(hard.dataobj, dtype=np.float32)[None], hard.affine, grid_shape,
                                   grid_affine, mode="nearest").numpy().astype(np.uint8)
        if item.get("all_background"):
            out["label"] = np.zeros((1, *grid_shape), dtype=np.float32)
        elif item.get("labels"):
            lab = np.asarray(ref.dataobj).astype(np.int16)
            for src, dst in (item.get("label_map") or {}).items():
                lab[lab == int(src)] = int(dst)
            out["label"] = resample(lab[None].astype(np.float32), ref.affine, grid_shape, grid_affine, mode="nearest").numpy()
        return out


def _positive_samples(stack: np.ndarray, present: np.ndarray, head: np.ndarray, n: int, seed: int = 0,
                      gm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Random samples ``(C, n)`` of each present channel's positive voxels inside and outside ``head``.

    A channel with fewer positive voxels than ``n`` repeats them; an absent channel (or one with
    none) is all zeros. With ``gm`` (1, *grid), the third result is its value at each voxel
    sampled inside the head (``None`` without).
    """
    rng = np.random.default_rng(seed)
    s_in = np.zeros((stack.shape[0], n), dtype=np.float32)
    s_out = np.zeros((stack.shape[0], n), dtype=np.float32)
    g_in = None if gm is None else np.zeros((stack.shape[0], n), dtype=np.uint8)
    for c in range(stack.shape[0]):
        if not present[c]:
            continue
        flat = stack[c].ravel()
        for where, dst in ((head, s_in), (~head, s_out)):
            idx = np.flatnonzero(where.ravel() & (flat > 0))
            if idx.size:
                chosen = rng.choice(idx, size=n, replace=idx.size < n)
                dst[c] = flat[chosen]
                if g_in is not None and dst is s_in:
                    g_in[c] = np.asarray(gm).ravel()[chosen]
    return s_in, s_out, g_in



class SequenceDropoutd(Randomizable, MapTransform):
    """Zero a random subset of the present channels, keeping at least one.

    With probability ``prob`` a non-empty subset of the present channels is drawn (uniformly,
    or in proportion to ``weights``) and the others are zeroed (as a missing sequence is at
    inference). ``present`` is updated.

    Parameters
    ----------
    keys : KeysCollection
        The image key(s).
    prob : float
        Probability of dropping.
    weights : mapping of tuple of int to float, optional
        Relative weight of a kept subset, keyed by its sorted channel indices; subsets not named
        weigh 1. Empty (the default): every subset equally likely. Where every subset of a
        subject's channels weighs 0, nothing is dropped.
    silent_subsets : collection of tuple of int, optional
        Channel subsets (sorted indices) on which the model is taught to stay silent: when the
        channels left after dropout are exactly one of them, ``label_key`` becomes all
        background (a tumour that the remaining sequence barely shows is not to be guessed).
    label_key : str
        The label that ``silent_subsets`` clears.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.5,
                 weights: Mapping[tuple[int, ...], float] | None = None,
                 silent_subsets: Sequence[Sequence[int]] | None = None, label_key: str = "label") -> None:
        MapTransform.__init__(self, keys)
        self.prob = prob
        self.weights = {tuple(sorted(k)): float(v) for k, v in (weights or {}).items()}
        self.silent = {tuple(sorted(int(i) for i in k)) for k in (silent_subsets or [])}
        self.label_key = label_key
        self._keep: list[int] | None = None

    def randomize(self, data: Any) -> None:
        """Draw the subset to keep."""
        present = [int(i) for i in np.flatnonzero(data)]
        self._keep = None
        if len(present) > 1 and self.R.rand() < self.prob:
            subsets = [list(c) for r in range(1, len(present) + 1) for c in itertools.combinations(present, r)]
            if not self.weights:
                self._keep = subsets[int(self.R.randint(len(subsets)))]
                return
            w = np.array([self.weights.get(tuple(c), 1.0) for c in subsets], dtype=float)
            if w.sum() > 0:  # every subset of this subject's channels weighted 0: keep them all
                self._keep = subsets[int(self.R.choice(len(subsets), p=w / w.sum()))]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply the dropout to ``data``."""
        d = dict(data)
        self.randomize(np.asarray(d["present"]))
        if self._keep is not None:
            present = np.zeros_like(np.asarray(d["present"]))
            present[self._keep] = True
            for key in self.key_iterator(d):
                img = d[key]
                for c in range(img.shape[0]):
                    if not present[c]:
                        img[c] = 0
            d["present"] = present
        kept = tuple(int(i) for i in np.flatnonzero(np.asarray(d["present"])))
        if self.silent and kept in self.silent and self.label_key in d:
            d[self.label_key] = d[self.label_key] * 0
        return d


def train_transforms(roi_size: Sequence[int], dropout_prob: float, num_samples: int = 1,
                     pos_neg: Sequence[float] = (2.0, 1.0), intensity_augment: bool = False,
                     dropout_weights: Mapping[tuple[int, ...], float] | None = None,
                     domain_randomisation: Mapping[str, Any] | None = None, cached_indices: bool = False,
                     silent_subsets: Sequence[Sequence[int]] | None = None) -> Any:
    """Random transforms applied after the cache: pad, crop, flip, intensity jitter, dropout.

    Parameters
    ----------
    roi_size : sequence of int
        Crop size in voxels.
    dropout_prob : float
        Probability of sequence dropout (:class:`SequenceDropoutd`).
    num_samples : int
        Crops per subject per visit.
    pos_neg : sequence of float
        Relative frequency of crops centred on tumour (``pos``) and on tumour-free head
        tissue (``neg``, drawn inside the ``head`` mask, never in the air around it).
    intensity_augment : bool
        Also blur, sharpen the contrast (gamma) and add noise, so that the model does not
        learn the synthetic engine's exact noise and resolution.
    dropout_weights : mapping of tuple of int to float, optional
        Relative weights of kept subsets for :class:`SequenceDropoutd`.
    domain_randomisation : mapping, optional
        When given (options of :data:`DR_DEFAULTS`, possibly empty), the cached images are in
        scanner intensities (:class:`LoadSubjectd` with ``raw``) and every crop goes through
        :func:`domain_randomisation_transforms`, which ends with the normalisation.
    silent_subsets : sequence of sequence of int, optional
        Channel subsets taught to give no tumour (:class:`SequenceDropoutd`).
    cached_indices : bool
        The cache already holds the padded subject and its crop-centre candidates
        (:func:`make_dataset` with ``crop_indices_roi``): the crop does not recompute them
        every visit.
    """
    from monai.transforms import (
        Compose,
        DeleteItemsd,
        RandAdjustContrastd,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    dr = domain_randomisation is not None
    steps: list[Any] = [
        SpatialPadd(keys=["image", "label", "head", "gm"], spatial_size=list(roi_size), allow_missing_keys=True),
        RandCropByPosNegLabeld(
            keys=["image", "label", "head", "gm"] if dr else ["image", "label"], label_key="label",
            allow_missing_keys=dr,
            spatial_size=list(roi_size), pos=float(pos_neg[0]), neg=float(pos_neg[1]), num_samples=num_samples,
            allow_smaller=False, image_key="head", image_threshold=0,
            fg_indices_key="label_fg_indices" if cached_indices else None,
            bg_indices_key="label_bg_indices" if cached_indices else None,
        ),
    ]
    if cached_indices:
        steps.append(DeleteItemsd(keys=["label_fg_indices", "label_bg_indices"]))
    if dr:
        steps += domain_randomisation_transforms(domain_randomisation)
    steps += [
        DeleteItemsd(keys="head"),
        RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
    ]
    if intensity_augment:
        steps += [
            RandGaussianSmoothd(keys="image", sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0), sigma_z=(0.3, 1.0), prob=0.25),
            RandAdjustContrastd(keys="image", gamma=(0.7, 1.5), prob=0.25),
            RandGaussianNoised(keys="image", std=0.1, prob=0.25),
        ]
    steps.append(SequenceDropoutd(keys="image", prob=dropout_prob, weights=dropout_weights,
                                  silent_subsets=silent_subsets))
    return Compose(steps)


def make_dataset(items: list[dict[str, Any]], channels: Sequence[str], spacing: Sequence[float],
                 transform: Any | None = None, cache_rate: float = 1.0,
                 normalization: str = "zscore_foreground", raw: bool = False,
                 crop_indices_roi: Sequence[int] | None = None, hard_fraction: float = 0.0,
                 bias_channels: Sequence[str] = (), gm_maps: bool = False) -> Any:
    """Return a MONAI ``CacheDataset`` over the loaded subjects, with optional random transforms.

    An item listed more than once is loaded once: the result is then a ``Subset`` of the
    cache that lists it as often as ``items`` does (each listing still draws its own crops).

    ``raw`` caches scanner intensities and intensity samples (for domain randomisation,
    :func:`train_transforms`'s ``domain_randomisation``) instead of normalised images.
    ``crop_indices_roi`` pads each subject to at least that size and caches the tumour and
    head voxel indices that crop centres are drawn from (use with ``train_transforms(...,
    cached_indices=True)``; it saves ~0.2 s per crop). ``hard_fraction`` (with ``crop_indices_roi``):
    items with a ``hard_negatives`` mask get that share of their negative crop centres from it
    (:class:`training.hard_negatives.HardNegativeIndicesd`). ``bias_channels``, ``gm_maps``: see
    :class:`LoadSubjectd`.
    """
    from monai.data import CacheDataset
    from monai.transforms import Compose, FgBgToIndicesd, SpatialPadd
    from torch.utils.data import Subset

    steps: list[Any] = [LoadSubjectd(channels, spacing, normalization, raw=raw, bias_channels=bias_channels,
                                     gm_maps=gm_maps)]
    if crop_indices_roi is not None:
        steps += [SpatialPadd(keys=["image", "label", "head", "hard", "gm"], spatial_size=list(crop_indices_roi),
                              allow_missing_keys=True),
                  FgBgToIndicesd(keys="label", image_key="head", image_threshold=0)]
        if hard_fraction > 0:
            from training.hard_negatives import HardNegativeIndicesd

            steps.append(HardNegativeIndicesd(hard_fraction))
    if transform is not None:
        steps.append(transform)
    # an item listed several times (negative_items' repeats) is loaded and cached once
    keys = [json.dumps(item, sort_keys=True, default=str) for item in items]
    first = {k: i for i, k in reversed(list(enumerate(keys)))}
    if len(first) == len(items):
        return CacheDataset(items, Compose(steps), cache_rate=cache_rate, num_workers=2, progress=False)
    unique = sorted(set(first.values()))
    slot = {keys[i]: n for n, i in enumerate(unique)}
    cached = CacheDataset([items[i] for i in unique], Compose(steps), cache_rate=cache_rate, num_workers=2,
                          progress=False)
    return Subset(cached, [slot[k] for k in keys])
