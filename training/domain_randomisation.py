"""SynthSeg-style domain randomisation of raw-intensity training crops (``[train.domain_randomisation]``).

Random monotonic intensity curves, clipping and 8-bit quantisation, a smooth bias field per channel,
a noise floor, thick slices, zero backgrounds and partial fields of view, then the normalisation the
inference engine applies to a whole head (from intensity samples taken before cropping). Labels are
never changed. Used by :func:`training.datasets.train_transforms`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

__all__ = ["DR_DEFAULTS", "NormalizeFromSampled", "RandBackgroundd", "RandBiasFieldChanneld", "RandFieldOfViewd",
           "RandGreyMatterGaind", "RandIntensityRemapd", "RandNoiseFloord", "RandThickSlicesd",
           "domain_randomisation_transforms"]


#: Default probabilities and ranges of the domain randomisation (``[train.domain_randomisation]`` keys).
DR_DEFAULTS: dict[str, Any] = {
    "gm_gain_prob": 0.0,          # grey matter's intensity times a random gain per channel (needs tissue maps)
    "gm_gain": [0.85, 1.5],       # gain range (log-uniform): grey against white matter, darker or brighter
    "remap_prob": 0.6,            # random monotonic intensity curve per channel (gamma and a piecewise-linear remap)
    "gamma": [0.5, 2.0],          # gamma range of the remap
    "remap_points": 4,            # interior control points of the piecewise-linear remap
    "remap_jitter": 0.6,          # how far (fraction of the even spacing) a control point may move
    "clip_prob": 0.2,             # clip each channel at a random upper percentile...
    "clip_percentile": [97.0, 100.0],
    "quantise_prob": 0.2,         # ...and/or quantise it to 8 bits (256 levels of its range)
    "bias_prob": 0.5,             # multiplicative smooth bias field per channel
    "bias_coeff": 0.4,            # amplitude of the (log) polynomial coefficients
    "noise_prob": 0.4,            # Rician-like noise floor, std as a fraction of the channel's foreground mean
    "noise_std": [0.01, 0.08],
    "thick_slices_prob": 0.4,     # thick slices: average over 2-4 voxels along one random axis, then linear back
    "thick_factor": [2, 4],
    "zero_background_prob": 0.4,  # everything outside the head exactly 0 (skull-stripped or masked scanner output)
    "fov_prob": 0.25,             # partial field of view / defacing: a slab at one side zeroed (never over tumour)
    "fov_fraction": [0.1, 0.5],   # slab thickness as a fraction of the crop
}


def _get(img: Any, c: int) -> np.ndarray:
    """Channel ``c`` of a numpy array or (Meta)Tensor as float32 numpy."""
    ch = img[c]
    return np.asarray(ch.detach().cpu().numpy() if hasattr(ch, "detach") else ch, dtype=np.float32)


def _set(img: Any, c: int, arr: np.ndarray) -> None:
    """Write ``arr`` into channel ``c`` of a numpy array or (Meta)Tensor."""
    if isinstance(img, np.ndarray):
        img[c] = arr
    else:
        import torch

        img[c] = torch.as_tensor(np.ascontiguousarray(arr), dtype=img.dtype)


def _present(d: Mapping[Hashable, Any], n: int) -> np.ndarray:
    return np.asarray(d.get("present", np.ones(n, dtype=bool)), dtype=bool)


class RandIntensityRemapd(Randomizable, MapTransform):
    """Random monotonic intensity curves, one per present channel, applied to the image and its samples.

    Each channel's intensities are scaled to ``[0, 1]`` by a high percentile of its head
    sample, passed through a random gamma and a random increasing piecewise-linear curve
    (never an inversion: the sequence's contrast order is kept, only its shape and spacing
    change), optionally clipped at a random upper percentile and quantised to 8 bits, then
    scaled back. Zero stays zero (a missing channel or a zero background is untouched).

    Parameters
    ----------
    keys : KeysCollection
        Image key(s), ``(C, ...)``.
    sample_keys : sequence of str
        Keys of ``(C, n)`` intensity samples transformed alike (for :class:`NormalizeFromSampled`).
    prob, gamma, points, jitter, clip_prob, clip_percentile, quantise_prob
        See :data:`DR_DEFAULTS`.
    """

    def __init__(self, keys: KeysCollection, sample_keys: Sequence[str] = ("sample_in", "sample_out"),
                 prob: float = 0.6, gamma: Sequence[float] = (0.5, 2.0), points: int = 4, jitter: float = 0.6,
                 clip_prob: float = 0.2, clip_percentile: Sequence[float] = (97.0, 100.0),
                 quantise_prob: float = 0.2) -> None:
        MapTransform.__init__(self, keys)
        self.sample_keys = list(sample_keys)
        self.prob, self.gamma, self.points, self.jitter = float(prob), tuple(gamma), int(points), float(jitter)
        self.clip_prob, self.clip_percentile, self.quantise_prob = float(clip_prob), tuple(clip_percentile), float(quantise_prob)

    def randomize(self, data: Any = None) -> None:
        pass

    def _curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.R.rand() >= self.prob:
            return None
        k = self.points
        xs = np.linspace(0.0, 1.0, k + 2)
        steps = self.R.uniform(1.0 - self.jitter, 1.0 + self.jitter, size=k + 1)
        ys = np.concatenate([[0.0], np.cumsum(steps)])
        ys /= ys[-1]
        g = float(np.exp(self.R.uniform(np.log(self.gamma[0]), np.log(self.gamma[1]))))
        return xs, ys ** g

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Remap every present channel of ``data``."""
        d = dict(data)
        key0 = next(iter(self.key_iterator(d)))
        n = np.asarray(d[key0]).shape[0]
        present = _present(d, n)
        for c in range(n):
            if not present[c]:
                continue
            curve = self._curve()
            clip = self.R.rand() < self.clip_prob
            cut = float(self.R.uniform(self.clip_percentile[0], self.clip_percentile[1]))
            quant = self.R.rand() < self.quantise_prob
            if curve is None and not clip and not quant:
                continue
            ref = np.asarray(d[self.sample_keys[0]])[c] if self.sample_keys and self.sample_keys[0] in d else None
            top = float(np.percentile(ref[ref > 0], 99.5)) if ref is not None and (ref > 0).any() else 0.0
            if top <= 0:
                continue
            hi = float(np.percentile(ref[ref > 0], cut)) / top if clip and ref is not None else np.inf

            def f(v: np.ndarray, curve: Any = curve, hi: float = hi, quant: bool = quant, top: float = top) -> np.ndarray:
                u = np.clip(np.asarray(v, dtype=np.float32) / top, 0.0, None)
                if np.isfinite(hi):
                    u = np.minimum(u, hi)
                if curve is not None:
                    xs, ys = curve
                    tail = u > 1.0  # above the scale point: continue the last segment's slope
                    slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
                    u = np.where(tail, ys[-1] + (u - 1.0) * slope, np.interp(u, xs, ys))
                if quant:
                    m = max(float(u.max()), 1e-6)
                    u = np.round(u / m * 255.0) / 255.0 * m
                return np.asarray(u * top, dtype=np.float32)

            for key in self.key_iterator(d):
                _set(d[key], c, f(_get(d[key], c)))
            for sk in self.sample_keys:
                if sk in d:
                    arr = np.array(d[sk], dtype=np.float32, copy=True)
                    arr[c] = f(arr[c])
                    d[sk] = arr
        return d


class RandGreyMatterGaind(Randomizable, MapTransform):
    """Grey matter's contrast against the other tissues, drawn per present channel (SynthSeg's per-tissue contrast).

    Each present channel, with probability ``prob``, is multiplied by ``1 + f (g - 1)``, where
    ``f`` is the voxel's grey-matter fraction (``gm_key``: the subject's tissue map on the model
    grid, uint8 0-255, from :class:`training.datasets.LoadSubjectd` with ``gm_maps``) and ``g``
    a gain drawn log-uniformly from ``gain``. The intensity samples inside the head
    (``sample_in``, with their fractions in ``sample_gm_key``) are scaled alike, so that
    :class:`NormalizeFromSampled` sees the whole head as changed. The scanner's own grey/white
    contrast in FLAIR varies a lot with TI, TE and field strength; where it is strong, bright
    cortex looks like oedema to a network that has seen only weaker ones. Labels are unchanged;
    the two fraction keys are removed (present or not), so crops with and without a tissue map
    batch together.

    Parameters
    ----------
    keys : KeysCollection
        Image key(s).
    prob : float
        Probability per channel.
    gain : sequence of float
        ``(low, high)`` gain range.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.0, gain: Sequence[float] = (0.85, 1.5),
                 gm_key: str = "gm", sample_gm_key: str = "sample_gm") -> None:
        MapTransform.__init__(self, keys)
        self.prob = float(prob)
        self.log_gain = (float(np.log(gain[0])), float(np.log(gain[1])))
        self.gm_key, self.sample_gm_key = gm_key, sample_gm_key

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Scale grey matter in every present channel (with probability ``prob``) by its own gain."""
        d = dict(data)
        gm = d.pop(self.gm_key, None)
        sample_gm = d.pop(self.sample_gm_key, None)
        if gm is None or self.prob <= 0:
            return d
        frac = np.asarray(gm, dtype=np.float32)[0] / 255.0
        samples = np.array(d["sample_in"], dtype=np.float32) if sample_gm is not None and "sample_in" in d else None
        for key in self.key_iterator(d):
            img = d[key]
            present = _present(d, img.shape[0])
            for c in range(img.shape[0]):
                if present[c] and self.R.rand() < self.prob:
                    g = float(np.exp(self.R.uniform(*self.log_gain)))
                    _set(img, c, _get(img, c) * (1.0 + frac * (g - 1.0)))
                    if samples is not None:
                        samples[c] *= 1.0 + np.asarray(sample_gm, dtype=np.float32)[c] / 255.0 * (g - 1.0)
        if samples is not None:
            d["sample_in"] = samples
        return d


class RandBiasFieldChanneld(Randomizable, MapTransform):
    """A smooth multiplicative bias field, drawn independently for each present channel.

    ``exp`` of a random polynomial (degree 3) over the crop, normalised to geometric mean 1
    so that the channel's statistics barely move. Zero stays zero.

    Parameters
    ----------
    keys : KeysCollection
        Image key(s).
    prob : float
        Probability per channel.
    coeff : float
        Coefficients drawn from ``[-coeff, coeff]``.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.5, coeff: float = 0.4) -> None:
        MapTransform.__init__(self, keys)
        self.prob, self.coeff = float(prob), float(coeff)

    def randomize(self, data: Any = None) -> None:
        pass

    def _field(self, shape: Sequence[int]) -> np.ndarray:
        axes = [np.linspace(-1.0, 1.0, int(n), dtype=np.float32) for n in shape]
        grids = np.meshgrid(*axes, indexing="ij")
        log_f = np.zeros(tuple(int(n) for n in shape), dtype=np.float32)
        for i in range(4):
            for j in range(4 - i):
                for k in range(4 - i - j):
                    if i + j + k == 0:
                        continue
                    log_f += float(self.R.uniform(-self.coeff, self.coeff)) * grids[0] ** i * grids[1] ** j * grids[2] ** k
        log_f -= log_f.mean()
        return np.exp(log_f)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Multiply every present channel (with probability ``prob``) by its own field."""
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            present = _present(d, img.shape[0])
            for c in range(img.shape[0]):
                if present[c] and self.R.rand() < self.prob:
                    _set(img, c, _get(img, c) * self._field(img.shape[1:]))
        return d


class RandNoiseFloord(Randomizable, MapTransform):
    """Rician-like noise per present channel: ``|x + n1 + i n2|``, std a random fraction of the head mean.

    Parameters
    ----------
    keys : KeysCollection
        Image key(s).
    prob : float
        Probability per channel.
    std : sequence of float
        Range of the noise std as a fraction of the channel's mean head intensity (``sample_in``).
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.4, std: Sequence[float] = (0.01, 0.08)) -> None:
        MapTransform.__init__(self, keys)
        self.prob, self.std = float(prob), tuple(float(v) for v in std)

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Add the noise."""
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            present = _present(d, img.shape[0])
            for c in range(img.shape[0]):
                if not present[c] or self.R.rand() >= self.prob:
                    continue
                ref = np.asarray(d["sample_in"])[c] if "sample_in" in d else _get(img, c).ravel()
                sd = float(self.R.uniform(self.std[0], self.std[1])) * float(np.mean(ref[ref > 0])) if (ref > 0).any() else 0.0
                shape = tuple(img.shape[1:])
                n1 = self.R.standard_normal(shape).astype(np.float32) * sd
                n2 = self.R.standard_normal(shape).astype(np.float32) * sd
                x = _get(img, c)
                _set(img, c, np.sqrt((x + n1) ** 2 + n2 ** 2))
        return d


class RandThickSlicesd(Randomizable, MapTransform):
    """Thick slices: each present channel averaged over ``factor`` voxels along one random axis, then linearly back.

    Simulates a 2D acquisition with thick slices (or a low-resolution series resampled to
    the model grid); channels are drawn independently, as sequences are acquired independently.

    Parameters
    ----------
    keys : KeysCollection
        Image key(s).
    prob : float
        Probability per channel.
    factor : sequence of int
        Range ``[lo, hi]`` of the slice thickness in grid voxels.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.4, factor: Sequence[int] = (2, 4)) -> None:
        MapTransform.__init__(self, keys)
        self.prob, self.factor = float(prob), (int(factor[0]), int(factor[1]))

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Thicken the slices."""
        import torch
        import torch.nn.functional as F

        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            present = _present(d, img.shape[0])
            for c in range(img.shape[0]):
                if not present[c] or self.R.rand() >= self.prob:
                    continue
                axis = int(self.R.randint(3))
                k = int(self.R.randint(self.factor[0], self.factor[1] + 1))
                x = torch.as_tensor(_get(img, c))[None, None]
                size = list(x.shape[2:])
                kernel = [1, 1, 1]
                kernel[axis] = k
                low = F.avg_pool3d(x, kernel_size=kernel, stride=kernel, ceil_mode=True)
                back = F.interpolate(low, size=size, mode="trilinear", align_corners=False)[0, 0]
                _set(img, c, back.numpy())
        return d


class RandBackgroundd(Randomizable, MapTransform):
    """With probability ``prob``, every channel exactly 0 outside the head (as masked or skull-stripped output).

    Needs the ``head`` key (the crop of :class:`LoadSubjectd`'s foreground, dilated by one
    voxel here so that the scalp's edge is kept). The samples outside the head are zeroed
    alike, so normalisation sees what the engine would.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.4, head_key: str = "head") -> None:
        MapTransform.__init__(self, keys)
        self.prob, self.head_key = float(prob), head_key

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.rand() < self.prob

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Zero the background."""
        from scipy import ndimage

        d = dict(data)
        self.randomize()
        if not self._do or self.head_key not in d:
            return d
        head = ndimage.binary_dilation(np.asarray(d[self.head_key])[0] > 0, iterations=1)
        outside = np.asarray(~head)
        for key in self.key_iterator(d):
            img = d[key]
            for c in range(img.shape[0]):
                x = _get(img, c)
                x[outside] = 0
                _set(img, c, x)
        if "sample_out" in d:
            d["sample_out"] = np.zeros_like(np.asarray(d["sample_out"]))
        return d


class RandFieldOfViewd(Randomizable, MapTransform):
    """Partial field of view or defacing: a slab at one random side of the crop zeroed in every channel.

    The slab never covers a labelled (tumour) voxel: it is made thinner, or left out, so the
    label stays true. ``head`` (if present) is cleared in the slab too.

    Parameters
    ----------
    keys : KeysCollection
        Image key(s).
    prob : float
        Probability per crop.
    fraction : sequence of float
        Range of the slab's thickness as a fraction of the crop.
    label_key : str
        The label, which is never changed.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.25, fraction: Sequence[float] = (0.1, 0.5),
                 label_key: str = "label") -> None:
        MapTransform.__init__(self, keys)
        self.prob, self.fraction, self.label_key = float(prob), tuple(float(v) for v in fraction), label_key

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.rand() < self.prob
        self._axis = int(self.R.randint(3))
        self._low_side = bool(self.R.rand() < 0.5)
        self._frac = float(self.R.uniform(self.fraction[0], self.fraction[1]))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Zero the slab."""
        d = dict(data)
        self.randomize()
        if not self._do:
            return d
        key0 = next(iter(self.key_iterator(d)))
        n = int(d[key0].shape[1 + self._axis])
        depth = round(self._frac * n)
        if self.label_key in d:
            lab = np.asarray(d[self.label_key])[0] > 0
            if lab.any():
                other = tuple(a for a in range(3) if a != self._axis)
                idx = np.flatnonzero(lab.any(axis=other))
                depth = min(depth, int(idx.min()) if self._low_side else n - 1 - int(idx.max()))
        if depth <= 0:
            return d
        sl: list[Any] = [slice(None)] * 4
        sl[1 + self._axis] = slice(0, depth) if self._low_side else slice(n - depth, n)
        for key in [*self.key_iterator(d), *(["head"] if "head" in d else [])]:
            d[key][tuple(sl)] = 0
        return d


class NormalizeFromSampled(MapTransform):
    """Z-score a crop's channels as the engine would the whole head, from the (randomised) intensity samples.

    The engine's normalisation (:func:`models.preprocess.zscore_foreground` with
    ``per_channel``) thresholds each channel's positive voxels by Otsu and z-scores over the
    voxels above it; here the same is done on ``sample_in`` + ``sample_out``, and the crop is
    scaled with that mean and std and clipped to ``±clip``. Absent channels become zeros.
    The sample keys are removed.
    """

    def __init__(self, keys: KeysCollection, sample_keys: Sequence[str] = ("sample_in", "sample_out"),
                 clip: float = 6.0) -> None:
        MapTransform.__init__(self, keys)
        self.sample_keys, self.clip = list(sample_keys), float(clip)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Normalise and drop the samples."""
        from models.preprocess import foreground_mask

        d = dict(data)
        samples = [np.asarray(d.pop(k)) for k in self.sample_keys if k in d]
        for key in self.key_iterator(d):
            img = d[key]
            present = _present(d, img.shape[0])
            for c in range(img.shape[0]):
                if not present[c]:
                    _set(img, c, np.zeros(tuple(img.shape[1:]), dtype=np.float32))
                    continue
                vals = np.concatenate([s[c] for s in samples]) if samples else _get(img, c).ravel()
                vals = vals[vals > 0]
                if vals.size < 16:
                    mean, std = 0.0, 1.0
                else:
                    fg = vals[foreground_mask(vals[None], [True])]
                    fg = fg if fg.size else vals
                    mean, std = float(fg.mean()), max(float(fg.std()), 1e-6)
                _set(img, c, np.clip((_get(img, c) - mean) / std, -self.clip, self.clip))
        return d


def domain_randomisation_transforms(options: Mapping[str, Any] | None = None) -> list[Any]:
    """The SynthSeg-style domain randomisation steps on a raw-intensity crop, ending with normalisation.

    Order: grey-matter gain (where a tissue map was loaded) → intensity remap (gamma,
    piecewise-linear curve, clip, 8-bit) → bias field → thick
    slices → noise floor → zero background → partial field of view → :class:`NormalizeFromSampled`.

    Parameters
    ----------
    options : mapping, optional
        Overrides of :data:`DR_DEFAULTS`.

    Raises
    ------
    ValueError
        On an unknown option.
    """
    o = dict(DR_DEFAULTS)
    unknown = sorted(set(options or {}) - set(DR_DEFAULTS) - {"enabled"})
    if unknown:
        raise ValueError(f"[train.domain_randomisation] has unknown key(s) {', '.join(unknown)}; "
                         f"known: enabled, {', '.join(sorted(DR_DEFAULTS))}.")
    o.update({k: v for k, v in (options or {}).items() if k != "enabled"})
    return [
        RandGreyMatterGaind("image", prob=o["gm_gain_prob"], gain=o["gm_gain"]),
        RandIntensityRemapd("image", prob=o["remap_prob"], gamma=o["gamma"], points=o["remap_points"],
                            jitter=o["remap_jitter"], clip_prob=o["clip_prob"], clip_percentile=o["clip_percentile"],
                            quantise_prob=o["quantise_prob"]),
        RandBiasFieldChanneld("image", prob=o["bias_prob"], coeff=o["bias_coeff"]),
        RandThickSlicesd("image", prob=o["thick_slices_prob"], factor=o["thick_factor"]),
        RandNoiseFloord("image", prob=o["noise_prob"], std=o["noise_std"]),
        RandBackgroundd("image", prob=o["zero_background_prob"]),
        RandFieldOfViewd("image", prob=o["fov_prob"], fraction=o["fov_fraction"]),
        NormalizeFromSampled("image"),
    ]
