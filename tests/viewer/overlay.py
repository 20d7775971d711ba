"""Judge a viewer's drawing from its pixels: is each segment's colour where the label map
has voxels, and nowhere else? Are the SR's lines on the enhancing tumour?

A capture of one displayed slice holds the coloured (non-grey) canvas pixels and the
viewer's canvas-to-patient mapping of that slice; every pixel is taken to the source
series' voxel grid with the *true* geometry (the phantom's affine), so an overlay that the
viewer draws shifted, flipped or on the wrong slice lands on voxels without that label.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["OverlayVerdict", "SliceCapture", "classify_colours", "judge_lines", "judge_overlay"]

#: A pixel is coloured when its channels differ by at least this much (the image is grey).
COLOURED = 20
#: Largest hue distance (degrees) from a segment's colour to count as that segment.
HUE_TOLERANCE = 25.0


@dataclass
class SliceCapture:
    """One displayed slice: coloured canvas pixels and the canvas → patient (LPS) mapping.

    Attributes
    ----------
    pixels : numpy.ndarray
        ``(n, 5)``: x, y (canvas pixels), r, g, b.
    w00, w10, w01 : numpy.ndarray
        Patient coordinates of canvas points (0, 0), (1, 0), (0, 1).
    """

    pixels: np.ndarray
    w00: np.ndarray
    w10: np.ndarray
    w01: np.ndarray

    @classmethod
    def from_js(cls, data: dict[str, Any]) -> SliceCapture:
        """Build from what the browser returned (``pix`` flat, ``w00``/``w10``/``w01``)."""
        pix = np.asarray(data["pix"], dtype=np.float64).reshape(-1, 5)
        return cls(pix, np.asarray(data["w00"], float), np.asarray(data["w10"], float), np.asarray(data["w01"], float))

    def to_world(self, xy: np.ndarray) -> np.ndarray:
        """Patient coordinates of canvas points ``(n, 2)`` (pixel centres: add 0.5 yourself)."""
        xy = np.asarray(xy, float).reshape(-1, 2)
        return self.w00 + xy[:, :1] * (self.w10 - self.w00) + xy[:, 1:2] * (self.w01 - self.w00)


def classify_colours(rgb: np.ndarray, colours: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Index (0-based) of the segment colour with the nearest hue, or -1 when none is near.

    Blending a colour with grey keeps its hue, so the fill (semi-transparent over the
    image) and the outline classify alike.
    """
    hues = np.array([colorsys.rgb_to_hsv(*(np.asarray(c) / 255.0))[0] * 360.0 for c in colours])
    rgb = np.asarray(rgb, float).reshape(-1, 3) / 255.0
    out = np.full(len(rgb), -1, dtype=int)
    for n, (r, g, b) in enumerate(rgb):
        h = colorsys.rgb_to_hsv(r, g, b)[0] * 360.0
        d = np.abs((hues - h + 180.0) % 360.0 - 180.0)
        if d.min() <= HUE_TOLERANCE:
            out[n] = int(np.argmin(d))
    return out


@dataclass
class OverlayVerdict:
    """Figures of one study's overlay and whether they pass.

    Attributes
    ----------
    precision : dict
        Segment label value → share of its overlay pixels within one voxel of that label.
    recall : dict
        Segment label value → share of its voxels within one voxel of its overlay.
    exact_colour : dict
        Segment label value → share of its overlay pixels drawn in exactly its colour
        (± 8 per channel; the outline is opaque, the fill blends with the image).
    empty_slices_drawn : list of int
        Slices without any label where the viewer drew a segment colour.
    unknown_pixels : int
        Coloured pixels matching no segment colour.
    problems : list of str
    """

    precision: dict[int, float] = field(default_factory=dict)
    recall: dict[int, float] = field(default_factory=dict)
    exact_colour: dict[int, float] = field(default_factory=dict)
    empty_slices_drawn: list[int] = field(default_factory=list)
    unknown_pixels: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def _near(mask2d: np.ndarray, ij: np.ndarray) -> np.ndarray:
    """Whether each (i, j) has a True voxel of ``mask2d`` within one voxel (3 × 3)."""
    padded = np.pad(mask2d, 1)
    hit = np.zeros(len(ij), bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            hit |= padded[ij[:, 0] + 1 + di, ij[:, 1] + 1 + dj]
    return hit


def judge_overlay(captures: dict[int, SliceCapture], labels: np.ndarray, affine_lps: np.ndarray,
                  segments: Sequence[tuple[int, tuple[int, int, int]]], *, threshold: float = 0.9) -> OverlayVerdict:
    """Check every captured slice's overlay against the true label map.

    Parameters
    ----------
    captures : dict
        Slice index ``k`` (by position, the label map's third axis) → its capture.
    labels : numpy.ndarray
        True label map ``(i, j, k)``.
    affine_lps : numpy.ndarray
        Voxel → patient (LPS) of the source series.
    segments : sequence of (label value, rgb)
        The SEG's segments and display colours.
    threshold : float
        Smallest precision and recall that pass.

    Returns
    -------
    OverlayVerdict
    """
    inv = np.linalg.inv(affine_lps)
    colours = [c for _, c in segments]
    values = [v for v, _ in segments]
    verdict = OverlayVerdict()
    hits = {v: [0, 0] for v in values}  # on label, total overlay pixels
    exact = dict.fromkeys(values, 0)
    covered: dict[int, dict[int, np.ndarray]] = {v: {} for v in values}
    ni, nj, nk = labels.shape
    for k, cap in sorted(captures.items()):
        if len(cap.pixels) == 0:
            continue
        world = cap.to_world(cap.pixels[:, :2] + 0.5)
        idx = (np.c_[world, np.ones(len(world))] @ inv.T)[:, :3]
        if np.any(np.abs(idx[:, 2] - k) > 0.01):
            verdict.problems.append(f"slice {k}: the viewer's canvas maps to slice {idx[0, 2]:.2f}")
        ij = np.rint(idx[:, :2]).astype(int)
        inside = (ij[:, 0] >= 0) & (ij[:, 0] < ni) & (ij[:, 1] >= 0) & (ij[:, 1] < nj)
        cls = classify_colours(cap.pixels[:, 2:], colours)
        verdict.unknown_pixels += int(np.sum(cls < 0))
        if not labels[:, :, k].any() and np.any(cls >= 0):
            verdict.empty_slices_drawn.append(k)
        for n, v in enumerate(values):
            sel = (cls == n) & inside
            exact[v] += int(np.sum(np.all(np.abs(cap.pixels[cls == n, 2:] - np.asarray(colours[n])) <= 8, axis=1)))
            out_of_grid = int(np.sum((cls == n) & ~inside))
            on = _near(labels[:, :, k] == v, ij[sel])
            hits[v][0] += int(on.sum())
            hits[v][1] += int(sel.sum()) + out_of_grid
            drawn = np.zeros((ni, nj), bool)
            drawn[ij[sel, 0], ij[sel, 1]] = True
            covered[v][k] = drawn
    for v in values:
        total_voxels = int(np.sum(labels == v))
        if total_voxels == 0:
            if hits[v][1]:
                verdict.problems.append(f"segment {v} has no voxels but {hits[v][1]} pixels show its colour")
            continue
        verdict.precision[v] = hits[v][0] / hits[v][1] if hits[v][1] else 0.0
        found = 0
        for k in range(nk):
            vox = np.argwhere(labels[:, :, k] == v)
            if len(vox) and k in covered[v]:
                found += int(_near(covered[v][k], vox).sum())
        verdict.recall[v] = found / total_voxels
        verdict.exact_colour[v] = exact[v] / hits[v][1] if hits[v][1] else 0.0
        if verdict.exact_colour[v] < 0.05:
            verdict.problems.append(f"segment {v}: its colour {colours[values.index(v)]} is not drawn as such")
        if verdict.precision[v] < threshold:
            verdict.problems.append(f"segment {v}: {verdict.precision[v]:.1%} of its overlay pixels on its label")
        if verdict.recall[v] < threshold:
            verdict.problems.append(f"segment {v}: {verdict.recall[v]:.1%} of its voxels under its overlay")
    if verdict.empty_slices_drawn:
        verdict.problems.append(f"segment colours on slices without any label: {verdict.empty_slices_drawn}")
    return verdict


def judge_lines(lines_world: Sequence[np.ndarray], k: int, labels: np.ndarray, affine_lps: np.ndarray,
                on_value: int, within_values: Sequence[int]) -> list[str]:
    """Check drawn measurement lines: end points on ``on_value`` (within one voxel), every
    point of the line on the lesion (``within_values``, within one voxel), on slice ``k``.

    Returns
    -------
    list of str
        Problems (empty when the lines lie on the lesion).
    """
    inv = np.linalg.inv(affine_lps)
    problems = []
    lesion = np.isin(labels[:, :, k], list(within_values))
    target = labels[:, :, k] == on_value
    for n, line in enumerate(lines_world):
        ends = np.asarray(line, float).reshape(-1, 3)
        t = np.linspace(0.0, 1.0, 50)[:, None]
        samples = ends[0] + t * (ends[-1] - ends[0])
        idx = (np.c_[samples, np.ones(len(samples))] @ inv.T)[:, :3]
        if np.any(np.abs(idx[:, 2] - k) > 0.01):
            problems.append(f"line {n} is not on slice {k} (at {idx[0, 2]:.2f})")
            continue
        ij = np.rint(idx[:, :2]).astype(int)
        if np.any(ij < 0) or np.any(ij[:, 0] >= labels.shape[0]) or np.any(ij[:, 1] >= labels.shape[1]):
            problems.append(f"line {n} leaves the image")
            continue
        if not _near(target, ij[[0, -1]]).all():
            problems.append(f"line {n}: an end point is not on label {on_value}")
        if not _near(lesion, ij).all():
            problems.append(f"line {n}: {int((~_near(lesion, ij)).sum())} of 50 points off the lesion")
    return problems
