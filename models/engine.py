"""The inference engine: a bundle's preprocessing, sliding-window inference, labels back on the reference grid.

Input is every available sequence already on one reference grid (the reference series'
voxels, voxel-to-RAS affine). The engine resamples them to the card's model grid (RAS,
``spacing_mm``), z-scores each channel over the foreground, feeds missing sequences as zero
channels (the models are trained with sequence dropout), runs MONAI's
``sliding_window_inference`` (bf16 autocast and optional ``torch.compile`` on CUDA; on CPU
the thread count follows ``os.sched_getaffinity``), resamples the class probabilities back
to the reference grid and takes the argmax; the card's component rules (``models.postprocess``)
then drop small or unconfident components.

:func:`get_engine` keeps engines warm per (bundle folder, weights SHA-256, device).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.bias import BIAS_CORRECTIONS, N4Cache
from models.bundle import Bundle, BundleError, load_bundle
from models.postprocess import (
    drop_small_components,
    drop_unconfident_components,
    min_component_peak,
    min_component_peak_scope,
)
from models.preprocess import (
    NORMALIZATIONS,
    foreground_mask,
    foreground_quantiles,
    normalize,
    ood_score,
    ras_grid,
    resample,
)

__all__ = ["InferenceEngine", "Prediction", "background_outside", "decide_labels", "drop_small_components", "get_engine",
           "head_mask", "resolve_device", "withhold_labels"]

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> str:
    """Return ``"cuda"`` or ``"cpu"`` for ``"auto" | "cpu" | "cuda"``.

    Raises
    ------
    ValueError
        If ``device`` is unknown, or ``"cuda"`` is asked for where none is available.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto.")
    return device


def head_mask(foreground: np.ndarray, dilate: int = 2) -> np.ndarray:
    """The head: a foreground mask dilated, then its enclosed cavities filled.

    Parameters
    ----------
    foreground : numpy.ndarray
        Boolean foreground on the model grid (:meth:`InferenceEngine.foreground`).
    dilate : int
        Voxels of dilation before the cavities (ventricles, a necrotic core dark on the given
        sequence) are filled.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the same shape; all True when the foreground is empty.
    """
    from scipy import ndimage

    if not foreground.any():
        return np.ones(foreground.shape, dtype=bool)
    mask = ndimage.binary_dilation(foreground, iterations=dilate) if dilate > 0 else foreground
    return np.asarray(ndimage.binary_fill_holes(mask), dtype=bool)


def background_outside(probs: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """Set class probabilities ``(K, *grid)`` to certain background (class 0) outside ``mask``."""
    out = probs.clone()
    outside = torch.from_numpy(~mask)
    out[1:, outside] = 0.0
    out[0, outside] = 1.0
    return out


def withhold_labels(probs: torch.Tensor, requires: Mapping[str, Sequence[str]], present: Sequence[str]) -> dict[int, list[str]]:
    """Move to background (in place) the probability of labels whose required sequences are all absent.

    A card's ``preprocessing.label_requires`` maps a label value to the sequences any one of
    which must be present for the model to claim it: oedema is FLAIR/T2 hyperintensity, and a
    T1 alone cannot show it (given a T1 alone, the demo model called 14-17 mL of two real healthy
    heads oedema). Such a label is *not assessed*, which the SR says; it is never silently 0.

    Parameters
    ----------
    probs : torch.Tensor
        Class probabilities ``(K, ...)``, class 0 = background.
    requires : mapping of str to sequence of str
        Label value (as a string, JSON keys) to the sequences it needs (any one).
    present : sequence of str
        The sequences that were given.

    Returns
    -------
    dict of int to list of str
        The withheld labels and what they need.
    """
    withheld: dict[int, list[str]] = {}
    for key, needs in requires.items():
        label = int(key)
        if not 0 < label < probs.shape[0]:
            raise BundleError(f"card preprocessing.label_requires names label {key!r}, which the model does not output.")
        if not any(seq in present for seq in needs):
            probs[0] += probs[label]
            probs[label] = 0.0
            withheld[label] = list(needs)
    return withheld


def argmax_classes(probs: torch.Tensor) -> torch.Tensor:
    """``torch.argmax(probs, dim=0)`` as uint8 (the first class on ties), for a few classes.

    A running comparison over the class axis: 5-6 times faster on the CPU than
    ``torch.argmax`` over a leading axis of a few classes (measured on a 4 × 3.9 M voxel map).
    """
    if probs.shape[0] > 255:
        raise ValueError(f"argmax_classes: {probs.shape[0]} classes do not fit in uint8.")
    best = probs[0].clone()
    index = torch.zeros(probs.shape[1:], dtype=torch.uint8)
    for k in range(1, probs.shape[0]):
        better = probs[k] > best
        best = torch.where(better, probs[k], best)
        index[better] = k
    return index


def decide_labels(probs: torch.Tensor, rule: str = "argmax") -> torch.Tensor:
    """Turn class probabilities ``(K, ...)`` (class 0 = background) into a uint8 label map.

    Parameters
    ----------
    probs : torch.Tensor
        Probabilities; all zero where nothing was predicted (outside the model grid), which
        gives background under both rules.
    rule : {"argmax", "foreground_first"}
        ``argmax`` takes the most probable class. ``foreground_first`` first decides tumour
        against background on the summed tumour probability (the whole-tumour region), then
        names the most probable tumour class: a voxel that is surely tumour but of an uncertain
        kind (a core seen on FLAIR alone) is not lost to background.

    Raises
    ------
    ValueError
        On an unknown rule.
    """
    if rule == "argmax":
        return argmax_classes(probs)
    if rule == "foreground_first":
        tumour = probs[1:].sum(dim=0) > probs[0]
        kind = argmax_classes(probs[1:]) + 1
        return torch.where(tumour, kind, torch.zeros_like(kind))
    raise ValueError(f"the card's preprocessing.decision {rule!r} is not 'argmax' or 'foreground_first'.")


@dataclass
class Prediction:
    """The engine's result.

    Attributes
    ----------
    labels : numpy.ndarray
        uint8 label map on the reference grid.
    channels_used : list of str
        Sequences that were present (the others were zero channels).
    seconds : dict
        Seconds per stage: ``preprocess``, ``inference``, ``postprocess``.
    device : str
        Where the network ran.
    model_grid : tuple of int
        The model grid's shape.
    ood_score : float or None
        How unlike the training data the input's normalised head intensities are (card
        ``preprocessing.ood``; :func:`models.preprocess.ood_score`); None when the card has no
        reference.
    ood_threshold : float or None
        The card's threshold for ``ood_score``.
    not_assessed : dict of int to list of str
        Labels the card's ``preprocessing.label_requires`` withheld, with the sequences any one
        of which they need (none of them was present).
    before_peak_rule : numpy.ndarray or None
        With ``predict(keep_probability=True)``: the labels before the card's
        ``min_component_peak`` rule (:func:`models.postprocess.drop_unconfident_components`).
    foreground_probability : numpy.ndarray or None
        With ``predict(keep_probability=True)``: the tumour probability (1 − background) on the
        reference grid, float32, which that rule reads.
    """

    labels: np.ndarray
    channels_used: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    model_grid: tuple[int, ...] = ()
    ood_score: float | None = None
    ood_threshold: float | None = None
    not_assessed: dict[int, list[str]] = field(default_factory=dict)
    before_peak_rule: np.ndarray | None = None
    foreground_probability: np.ndarray | None = None

    @property
    def out_of_distribution(self) -> bool:
        """True when the OOD score is above the card's threshold."""
        return self.ood_score is not None and self.ood_threshold is not None and self.ood_score > self.ood_threshold


def shift_average(name: str, value: Any) -> list[int]:
    """Check a card's ``preprocessing.shift_average``: a non-empty list of distinct voxel shifts >= 0.

    Raises
    ------
    BundleError
        With a sentence naming the bundle and the key.
    """
    shifts = value if isinstance(value, list) else None
    if (not shifts or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 64 for v in shifts)
            or len(set(shifts)) != len(shifts)):
        raise BundleError(f"bundle {name!r}: card preprocessing.shift_average {value!r} is not a list of distinct "
                          "whole numbers of model-grid voxels from 0 to 64.")
    return [int(v) for v in shifts]


class InferenceEngine:
    """Run one bundle on volumes; holds the network warm.

    Parameters
    ----------
    bundle : Bundle
        A loaded bundle (task ``segmentation``).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    overlap : float, optional
        Sliding-window overlap; the card's ``preprocessing.overlap`` when omitted.
    compile : bool
        ``torch.compile`` the network (CUDA only).
    threads : int, optional
        CPU threads; ``len(os.sched_getaffinity(0))`` when omitted.
    """

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        overlap: float | None = None,
        compile: bool = False,
        threads: int | None = None,
    ) -> None:
        if bundle.card.task != "segmentation":
            raise BundleError(f"bundle {bundle.name!r} has task {bundle.card.task!r}; the engine runs segmentation.")
        self.bundle = bundle
        self.device = resolve_device(device)
        if self.device == "cpu":
            n = threads or len(os.sched_getaffinity(0))
            torch.set_num_threads(max(1, n))
        pre = bundle.card.preprocessing
        self.spacing = [float(s) for s in pre.get("spacing_mm", [1.0, 1.0, 1.0])]
        self.roi_size = [int(s) for s in pre.get("roi_size", [96, 96, 96])]
        self.overlap = float(overlap if overlap is not None else pre.get("overlap", 0.25))
        self.normalize = str(pre.get("normalize", "zscore_foreground"))
        if self.normalize not in NORMALIZATIONS:
            raise BundleError(f"bundle {bundle.name!r}: card preprocessing.normalize {self.normalize!r} is not one of "
                              f"{', '.join(NORMALIZATIONS)}.")
        self.shifts = shift_average(bundle.name, pre.get("shift_average", [0]))
        self.min_peak = min_component_peak(bundle.name, pre.get("min_component_peak", 0.0))
        self.peak_scope = min_component_peak_scope(bundle.name, pre.get("min_component_peak_scope", "component"))
        self.bias_correction = str(pre.get("bias_correction", "none"))
        if self.bias_correction not in BIAS_CORRECTIONS:
            raise BundleError(f"bundle {bundle.name!r}: card preprocessing.bias_correction {self.bias_correction!r} "
                              f"is not one of {', '.join(BIAS_CORRECTIONS)}.")
        self.bias_channels = [str(c) for c in pre.get("bias_correction_channels", bundle.card.channels)]
        if not set(self.bias_channels) <= set(bundle.card.channels):
            raise BundleError(f"bundle {bundle.name!r}: card preprocessing.bias_correction_channels "
                              f"{self.bias_channels!r} names a sequence that is not one of the channels "
                              f"{', '.join(bundle.card.channels)}.")
        self.n4 = N4Cache()
        self.net: Any = bundle.build_network(self.device)
        if compile and self.device == "cuda":
            self.net = torch.compile(self.net)

    @property
    def channels(self) -> list[str]:
        """The sequence of each input channel."""
        return list(self.bundle.card.channels)

    def prepare(
        self,
        images: Mapping[str, np.ndarray],
        affine: np.ndarray,
        affines: Mapping[str, np.ndarray] | None = None,
        shape: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, np.ndarray, list[str]]:
        """Resample to the model grid, stack, correct the bias field (card options) and normalise.

        Parameters
        ----------
        images : mapping of str to numpy.ndarray
            Sequence label to its ``(i, j, k)`` volume.
        affine : numpy.ndarray
            The reference grid's voxel-to-RAS affine (the model grid covers it).
        affines : mapping of str to numpy.ndarray, optional
            Each image's own affine when the images are not on the reference grid: each is then
            resampled straight from its own grid onto the model grid (one interpolation, not
            two). Default: every image is on the reference grid.
        shape : sequence of int, optional
            The reference grid's shape (default: the images' common shape).

        Returns
        -------
        tuple
            ``(x, model_affine, present)``: ``x`` is ``(C, *model_grid)``.
        """
        present = [c for c in self.channels if c in images]
        if not present:
            raise ValueError(
                f"model {self.bundle.name!r} needs at least one of {', '.join(self.channels)}; "
                f"got {', '.join(images) or 'none'}."
            )
        ref_shape = tuple(shape) if shape is not None else next(iter(images.values())).shape
        own = dict(affines or {})
        if not own:
            for name, img in images.items():
                if img.shape != ref_shape:
                    raise ValueError(f"sequence {name} has shape {img.shape}, not the reference grid's {ref_shape}.")
        grid_shape, grid_affine = ras_grid(ref_shape, affine, self.spacing)
        # channels sharing one source grid are resampled together (one sampling grid each)
        groups: dict[tuple[tuple[int, ...], bytes], list[int]] = {}
        for c, name in enumerate(self.channels):
            if name in images:
                src_affine = np.asarray(own.get(name, affine), dtype=np.float64)
                groups.setdefault((tuple(images[name].shape), src_affine.tobytes()), []).append(c)
        on_grid = np.zeros((len(self.channels), *grid_shape), dtype=np.float32)
        for (_, key), chans in groups.items():
            src_affine = np.frombuffer(key, dtype=np.float64).reshape(4, 4)
            stack = np.stack([np.asarray(images[self.channels[c]], dtype=np.float32) for c in chans])
            on_grid[chans] = resample(stack, src_affine, grid_shape, grid_affine).numpy()
        if self.bias_correction == "n4":
            for c, name in enumerate(self.channels):
                if name in images and name in self.bias_channels:
                    on_grid[c] = self.n4.correct(on_grid[c], self.spacing)
        x = normalize(on_grid, [c in images for c in self.channels], self.normalize)
        return torch.from_numpy(x), grid_affine, present

    def ood(self, x: torch.Tensor, present: Sequence[bool] | None = None) -> tuple[float | None, float | None]:
        """``(score, threshold)`` of a prepared input against the card's ``preprocessing.ood`` (None, None without one).

        The card's ``ood`` table holds ``levels`` (quantile levels), ``reference`` (sequence to
        the training data's quantiles of its normalised head intensities) and ``threshold``.
        ``present`` flags the channels given (default: the non-zero ones).
        """
        spec = self.bundle.card.preprocessing.get("ood")
        if not isinstance(spec, dict) or not spec.get("reference"):
            return None, None
        arr = x.numpy()
        if present is None:
            present = [bool(np.any(arr[c])) for c in range(arr.shape[0])]
        levels = [float(v) for v in spec.get("levels", [])]
        q = foreground_quantiles(arr, present, levels) if levels else foreground_quantiles(arr, present)
        ref = {self.channels.index(k): v for k, v in spec["reference"].items() if k in self.channels}
        score = ood_score(q, ref)
        thr = spec.get("threshold")
        return (None if score is None else round(score, 4)), (None if thr is None else float(thr))

    @staticmethod
    def foreground(x: torch.Tensor) -> np.ndarray:
        """The Otsu foreground of the present (non-zero) channels of a prepared input."""
        arr = x.numpy()
        present = [bool(np.any(arr[c])) for c in range(arr.shape[0])]
        return foreground_mask(arr - arr.min(), present)

    def foreground_box(self, x: torch.Tensor, margin: int = 8, mask: np.ndarray | None = None) -> tuple[slice, ...]:
        """Bounding box (with ``margin`` voxels) of the foreground of a prepared input.

        The foreground is :meth:`foreground` (or ``mask`` when the caller has it already); the
        whole grid when nothing is found.
        """
        arr = x.numpy()
        mask = self.foreground(x) if mask is None else mask
        if not mask.any():
            return tuple(slice(0, int(n)) for n in arr.shape[1:])
        idx = np.argwhere(mask)
        lo = np.maximum(idx.min(axis=0) - margin, 0)
        hi = np.minimum(idx.max(axis=0) + margin + 1, arr.shape[1:])
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Sliding-window logits ``(K, *grid)`` for a prepared ``(C, *grid)`` input."""
        from monai.inferers import sliding_window_inference

        batch = x[None].to(self.device)
        # A window never larger than the input rounded up to the network's size divisor:
        # a card roi that covers a whole head gives one pass instead of padded windows.
        div = int(getattr(self.net, "size_divisor", 1))
        # (at least two deepest-level cells per axis, which instance norm needs.)
        roi = [min(int(r), max(-(-int(n) // div) * div, 2 * div)) for r, n in zip(self.roi_size, x.shape[1:], strict=True)]
        with torch.inference_mode():
            if self.device == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = sliding_window_inference(batch, roi, 1, self.net, overlap=self.overlap, mode="gaussian")
            else:
                out = sliding_window_inference(batch, roi, 1, self.net, overlap=self.overlap, mode="gaussian")
        assert isinstance(out, torch.Tensor)
        return out[0].float()

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(K, *grid)`` of a prepared input, averaged over the card's shifted tilings.

        With card ``preprocessing.shift_average`` (model-grid voxels, default ``[0]``), the input is
        also given shifted by each value along every axis (padded at the low end with each
        channel's lowest value, the background) and the shifted outputs are cropped back and
        averaged: the network's windows then fall at other places of the head, and a response that
        comes from where they fall, not from the anatomy, is averaged down.
        """
        total: torch.Tensor | None = None
        for s in self.shifts:
            if s == 0:
                xs = x
            else:
                low = x.flatten(1).amin(dim=1)[:, None, None, None]
                xs = F.pad(x - low, (s, 0, s, 0, s, 0)) + low
            p = torch.softmax(self.logits(xs)[:, s:, s:, s:], dim=0)
            total = p if total is None else total + p
        assert total is not None
        return total / len(self.shifts)

    def predict(
        self,
        images: Mapping[str, np.ndarray],
        affine: np.ndarray,
        affines: Mapping[str, np.ndarray] | None = None,
        shape: Sequence[int] | None = None,
        *,
        keep_probability: bool = False,
    ) -> Prediction:
        """Segment a study's volumes; labels come back on the reference grid.

        Parameters
        ----------
        images : mapping of str to numpy.ndarray
            Sequence label (``"T1"``, ``"T1C"``, ``"T2"``, ``"FLAIR"``) to its ``(i, j, k)``
            volume. Sequences the model does not take are ignored.
        affine : numpy.ndarray
            The reference grid's voxel-to-RAS affine.
        affines : mapping of str to numpy.ndarray, optional
            Each volume's own affine, when the volumes are on their own grids (each is
            resampled once, straight onto the model grid). Default: all on the reference grid.
        shape : sequence of int, optional
            The reference grid's shape; required with ``affines`` unless every volume has it.
        keep_probability : bool
            Also return the tumour probability and the labels before the peak rule (a choice of
            ``min_component_peak`` on a selection set: ``python -m training.peak_sweep``).

        Returns
        -------
        Prediction
            Labels on the reference grid, channels used and seconds per stage (``resample``:
            the inputs onto the model grid, when they came on their own grids; it is part of
            ``preprocess`` otherwise).
        """
        t0 = time.perf_counter()
        ref_shape = tuple(shape) if shape is not None else (next(iter(images.values())).shape if images else ())
        x, grid_affine, present = self.prepare(images, affine, affines, ref_shape)
        t_resampled = time.perf_counter()
        score, threshold = self.ood(x, [c in present for c in self.channels])
        fg = self.foreground(x)
        box = self.foreground_box(x, mask=fg)
        t1 = time.perf_counter()
        # Only the head's bounding box goes through the network; outside it is background.
        crop = self.probabilities(x[(slice(None), *box)])
        probs = torch.zeros((crop.shape[0], *x.shape[1:]), dtype=crop.dtype)
        probs[0] = 1.0
        probs[(slice(None), *box)] = crop.cpu()
        if bool(self.bundle.card.preprocessing.get("mask_outside_head", False)):
            # no tumour in the air: a zero-filled background (common in scanner output, and in
            # templates) is an intensity the synthetic training data never had
            probs = background_outside(probs, head_mask(fg))
        withheld = withhold_labels(probs, self.bundle.card.preprocessing.get("label_requires", {}) or {}, present)
        t2 = time.perf_counter()
        back = resample(probs.cpu(), grid_affine, ref_shape, np.asarray(affine), device="cpu")
        labels = decide_labels(back, str(self.bundle.card.preprocessing.get("decision", "argmax"))).numpy()
        labels = drop_small_components(labels, float(self.bundle.card.preprocessing.get("min_component_fraction", 0.0)))
        unfiltered, fg_prob = labels, back[1:].sum(dim=0).numpy()
        if self.min_peak > 0:
            labels = drop_unconfident_components(labels, fg_prob, self.min_peak, self.peak_scope)
        t3 = time.perf_counter()
        return Prediction(
            labels=labels,
            channels_used=present,
            seconds=({"resample": t_resampled - t0, "preprocess": t1 - t_resampled} if affines else {"preprocess": t1 - t0})
            | {"inference": t2 - t1, "postprocess": t3 - t2},
            device=self.device,
            model_grid=tuple(x.shape[1:]),
            ood_score=score,
            ood_threshold=threshold,
            not_assessed=withheld,
            before_peak_rule=unfiltered if keep_probability else None,
            foreground_probability=fg_prob.astype(np.float32) if keep_probability else None,
        )


#: ``(name, version)`` of each engine built (a cache miss) since a warm worker last emptied it.
LOAD_EVENTS: list[tuple[str, str]] = []


@functools.lru_cache(maxsize=4)
def _cached(folder: str, sha: str, device: str, overlap: float | None) -> InferenceEngine:
    bundle = load_bundle(Path(folder))
    LOAD_EVENTS.append((bundle.card.name, bundle.card.version))
    return InferenceEngine(bundle, device=device, overlap=overlap)


def get_engine(
    name_or_path: str | Path,
    device: str = "auto",
    overlap: float | None = None,
    search_paths: list[str | Path] | None = None,
) -> InferenceEngine:
    """Return a warm engine for a bundle, loading it on first use.

    Engines are cached by bundle folder, weights SHA-256 (so a replaced bundle is reloaded),
    device and overlap.

    Parameters
    ----------
    name_or_path : str or Path
        Bundle name or folder.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    overlap : float, optional
        Sliding-window overlap; the card's when omitted.
    search_paths : list of str or Path, optional
        Extra bundle folders.

    Returns
    -------
    InferenceEngine
        The engine.
    """
    bundle = load_bundle(name_or_path, search_paths)
    return _cached(str(bundle.path.resolve()), bundle.card.weights_sha256, resolve_device(device), overlap)
