"""RANO-style bidimensional measurements of a segmented lesion, in the source image's plane.

For each lesion (a 3D connected component of one label), on every slice of the source
series that the lesion crosses: the longest in-plane diameter, then the longest diameter
perpendicular to it; the slice where their product is largest is the one reported, as
the RANO criteria measure a contrast-enhancing glioma. A lesion is *measurable* when both
diameters are at least 10 mm and it is seen on at least two slices (RANO; Wen et al.,
J Clin Oncol 2010).

Diameters are measured between voxel centres in millimetres (so a lesion one voxel wide
measures 0 mm; the figures are never larger than an edge-to-edge reading). The end points
are given in the source image's pixel coordinates (column, row, with (0, 0) the top-left
corner of the top-left pixel) so that an SR can draw them as SCOORD polylines on the
referenced image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MEASURABLE_MIN_MM", "Bidimensional", "bidimensional_measurements"]

#: RANO: both perpendicular diameters at least this long (mm).
MEASURABLE_MIN_MM = 10.0
#: RANO: seen on at least this many slices.
MEASURABLE_MIN_SLICES = 2


@dataclass(frozen=True)
class Bidimensional:
    """One lesion's bidimensional measurement on one slice of the source series.

    Attributes
    ----------
    lesion : int
        1 for the largest lesion (by voxel count), 2 for the next, ...
    slice_index : int
        ``k`` of the source volume (its ``slice_refs[k]`` is the image the lines are on).
    long_axis : tuple of (float, float) pairs
        End points of the longest diameter, image pixel coordinates (column, row).
    short_axis : tuple of (float, float) pairs
        End points of the longest diameter perpendicular to it.
    long_mm, short_mm : float
        Their lengths in millimetres.
    voxels : int
        The lesion's voxel count (all slices).
    slices : int
        How many slices the lesion crosses.
    """

    lesion: int
    slice_index: int
    long_axis: tuple[tuple[float, float], tuple[float, float]]
    short_axis: tuple[tuple[float, float], tuple[float, float]]
    long_mm: float
    short_mm: float
    voxels: int
    slices: int

    @property
    def product_mm2(self) -> float:
        """Product of the perpendicular diameters (mm²)."""
        return self.long_mm * self.short_mm

    @property
    def measurable(self) -> bool:
        """RANO measurability: both diameters >= 10 mm, seen on >= 2 slices."""
        return (self.long_mm >= MEASURABLE_MIN_MM and self.short_mm >= MEASURABLE_MIN_MM
                and self.slices >= MEASURABLE_MIN_SLICES)


def _range_min_max(values: np.ndarray, first: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum and maximum of ``values[first[n]:end[n]]`` for every ``n`` (non-empty ranges), vectorised.

    A sparse table: level ``j`` holds the extrema of every run of ``2**j`` values, so each range
    is covered by two runs of its largest power of two.
    """
    mins, maxs = [values], [values]
    width = 1
    while 2 * width <= len(values):
        mins.append(np.minimum(mins[-1][:-width], mins[-1][width:]))
        maxs.append(np.maximum(maxs[-1][:-width], maxs[-1][width:]))
        width *= 2
    length = end - first
    level = np.floor(np.log2(length)).astype(int)
    low, high = np.empty(len(first)), np.empty(len(first))
    for j in np.unique(level):
        at = level == j
        a, b = first[at], end[at] - (1 << int(j))
        low[at] = np.minimum(mins[j][a], mins[j][b])
        high[at] = np.maximum(maxs[j][a], maxs[j][b])
    return low, high


def _in_plane(points_mm: np.ndarray, pixel_mm: float) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """Longest diameter and longest perpendicular of a set of pixel centres (mm, in-plane).

    Returns the two segments' end points (2 × 2 arrays, mm) and lengths, or ``None`` for
    a single point. ``pixel_mm`` is the finer pixel spacing: a perpendicular chord gathers
    the pixel centres within half of it from its line.
    """
    if len(points_mm) < 2:
        return None
    hull = points_mm
    if len(points_mm) > 3:
        from scipy.spatial import ConvexHull, QhullError

        try:
            hull = points_mm[ConvexHull(points_mm).vertices]
        except QhullError:  # all on one line
            hull = points_mm
    diff = hull[:, None, :] - hull[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    a, b = np.unravel_index(int(np.argmax(dist)), dist.shape)
    long_len = float(dist[a, b])
    if long_len == 0.0:
        return None
    u = (hull[b] - hull[a]) / long_len
    v = np.array([-u[1], u[0]])
    t = (points_mm - hull[a]) @ u
    s = (points_mm - hull[a]) @ v
    # chords perpendicular to u: the pixel centres within half a pixel of a line across u, for a
    # line through every distinct t; the widest chord (the first of equals) is the short axis
    best = (0.0, 0.0, 0.0, 0.0)
    by_t = np.argsort(t, kind="stable")
    ts, ss = t[by_t], s[by_t]
    lines = np.unique(np.round(t, 6))
    first = np.searchsorted(ts, lines - 0.5 * pixel_mm, side="left")
    end = np.searchsorted(ts, lines + 0.5 * pixel_mm, side="right")
    ok = end - first >= 2
    if ok.any():
        low, high = _range_min_max(ss, first[ok], end[ok])
        width = high - low
        n = int(np.argmax(width))
        if width[n] > 0.0:
            best = (float(width[n]), float(lines[ok][n]), float(low[n]), float(high[n]))
    short_len, t0, lo, hi = best
    long_ends = np.stack([hull[a], hull[b]])
    base = hull[a] + t0 * u
    short_ends = np.stack([base + lo * v, base + hi * v])
    return long_ends, short_ends, long_len, short_len


def bidimensional_measurements(mask: np.ndarray, spacing: tuple[float, float], *,
                               max_lesions: int = 5, min_voxels: int = 2) -> list[Bidimensional]:
    """Bidimensional measurements of each lesion of a binary mask.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean ``(i, j, k)`` array on the source series' grid (column, row, slice).
    spacing : (float, float)
        Pixel spacing along ``i`` (between columns) and ``j`` (between rows), in mm.
    max_lesions : int
        Report at most this many lesions, the largest first (RANO follows up to five).
    min_voxels : int
        Lesions smaller than this are not reported.

    Returns
    -------
    list of Bidimensional
        One per lesion, largest lesion first; empty when the mask is empty.

    Raises
    ------
    ValueError
        If ``mask`` is not 3D or a spacing is not positive.
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"bidimensional_measurements needs a 3D mask, got shape {mask.shape}.")
    si, sj = float(spacing[0]), float(spacing[1])
    if si <= 0 or sj <= 0:
        raise ValueError(f"Pixel spacing must be positive, got {spacing}.")
    if not mask.any():
        return []
    # label within the mask's bounding box only (a tumour is a small part of the series)
    outer = ndimage.find_objects(mask.view(np.uint8))[0]
    assert outer is not None  # the mask has voxels
    lo = [s.start for s in outer]
    components, _ = ndimage.label(mask[outer], structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(components.ravel())[1:]
    order = [int(n) + 1 for n in np.argsort(-sizes, kind="stable") if sizes[n] >= min_voxels][:max_lesions]
    boxes = ndimage.find_objects(components)
    out: list[Bidimensional] = []
    for rank, comp in enumerate(order, start=1):
        box = boxes[comp - 1]
        assert box is not None  # every label up to count has voxels
        i0, j0, k0 = box[0].start + lo[0], box[1].start + lo[1], box[2].start + lo[2]
        lesion = components[box] == comp  # the lesion's bounding box only
        ks = [k0 + int(k) for k in np.flatnonzero(lesion.any(axis=(0, 1)))]
        best: tuple[float, int, np.ndarray, np.ndarray, float, float] | None = None
        for k in ks:
            ii, jj = np.nonzero(lesion[:, :, k - k0])
            ii, jj = ii + i0, jj + j0
            found = _in_plane(np.stack([ii * si, jj * sj], axis=1).astype(np.float64), min(si, sj))
            if found is None:
                continue
            long_ends, short_ends, long_len, short_len = found
            product = long_len * short_len
            if best is None or (product, long_len) > (best[0], best[4]):
                best = (product, k, long_ends, short_ends, long_len, short_len)
        if best is None:
            continue
        _, k, long_ends, short_ends, long_len, short_len = best

        def to_pixels(ends: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
            p = [(float(x / si + 0.5), float(y / sj + 0.5)) for x, y in ends]
            return p[0], p[1]

        out.append(Bidimensional(lesion=rank, slice_index=k, long_axis=to_pixels(long_ends),
                                 short_axis=to_pixels(short_ends), long_mm=round(long_len, 2),
                                 short_mm=round(short_len, 2), voxels=int(sizes[comp - 1]), slices=len(ks)))
    return out
