"""From frames to volumes: split 4-D series, sort along the normal, check, build the affine."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from dicom_node.io.errors import SeriesReadError, describe_series
from dicom_node.io.frames import Frame
from dicom_node.io.volume import LPS_TO_RAS

__all__ = ["SplitKey", "split_frames", "stack_frames"]

log = logging.getLogger(__name__)

#: Tolerances: orientation cosines, relative spacing, positions (mm).
ORIENTATION_TOL = 1e-4
SPACING_REL_TOL = 1e-3
POSITION_TOL = 1e-3

#: Slice-position jitter accepted (mm): dcm2niix's own figure. dcm2niix (v1.0.20220720,
#: ``nii_dicom_batch.cpp``: ``isSameFloatT(dx, intersliceDistance(...), 0.2)``) takes the distance
#: between the first two slices as the step and warns "Interslice distance varies" (and adds an
#: equalised ``_Eq`` volume) once any adjacent distance differs from it by more than 0.2 mm.
SLICE_JITTER_MM = 0.2
#: ... but never more than this fraction of the slice step (thin slices).
SLICE_JITTER_REL = 0.25

#: A split key: a name and a function giving each frame its group value (None = absent).
SplitKey = tuple[str, Callable[[Frame], Hashable]]


def _fmt(v: float) -> str:
    return f"{v:g}"


def _b_label(b: Hashable) -> str:
    return f"b{_fmt(float(b))}" if isinstance(b, int | float) else "b?"  # type: ignore[arg-type]


SPLIT_KEYS: tuple[SplitKey, ...] = (
    ("b-value", lambda f: None if f.b_value is None else round(f.b_value, 1)),
    (
        "b-value and gradient direction",
        lambda f: (
            None
            if f.b_value is None
            else (round(f.b_value, 1), f.b_vector and tuple(round(x, 4) for x in f.b_vector))
        ),
    ),
    ("temporal position", lambda f: f.temporal),
    ("echo", lambda f: f.echo),
    ("acquisition number", lambda f: f.acquisition),
    ("trigger time", lambda f: f.trigger),
)


def _position_keys(frames: Sequence[Frame]) -> list[tuple[float, ...]]:
    return [tuple(np.round(f.ipp / POSITION_TOL).astype(np.int64).tolist()) for f in frames]


def _has_duplicates(frames: Sequence[Frame]) -> bool:
    keys = _position_keys(frames)
    return len(set(keys)) != len(keys)


def _label(name: str, value: Hashable, index: int) -> str:
    if name == "b-value":
        return _b_label(value)
    if name == "b-value and gradient direction":
        b = value[0] if isinstance(value, tuple) else value
        return f"{_b_label(b)}_d{index}"
    prefix = {"temporal position": "t", "echo": "e", "acquisition number": "a", "trigger time": "tt"}[name]
    return f"{prefix}{_fmt(float(value))}" if isinstance(value, int | float) else f"{prefix}{index}"  # type: ignore[arg-type]


def _sort_key(value: Hashable) -> tuple[float, tuple[float, ...]]:
    """Numeric order of split keys: a number, or (b-value, direction or None)."""
    if isinstance(value, tuple):
        first, direction = value
        return float(first), tuple(direction) if direction else ()
    return float(value), ()  # type: ignore[arg-type]


def split_frames(frames: Sequence[Frame]) -> list[tuple[str | None, list[Frame]]]:
    """Split the frames of a series into 3-D groups.

    A series with one frame per position is one group (key ``None``). When positions
    repeat, the first key (b-value; b-value and direction; temporal position; echo;
    acquisition number; trigger time) that leaves no repeated position inside any group
    splits it.

    Parameters
    ----------
    frames : sequence of Frame
        Every frame of the series.

    Returns
    -------
    list of (str or None, list of Frame)
        ``(split label, frames)`` in ascending key order.

    Raises
    ------
    SeriesReadError
        Positions repeat and no key separates them.
    """
    if not _has_duplicates(frames):
        return [(None, list(frames))]
    for name, key in SPLIT_KEYS:
        values = [key(f) for f in frames]
        if any(v is None for v in values):
            continue
        groups: dict[Hashable, list[Frame]] = {}
        for v, f in zip(values, frames, strict=True):
            groups.setdefault(v, []).append(f)
        if len(groups) < 2 or any(_has_duplicates(g) for g in groups.values()):
            continue
        ordered = sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))
        return [(_label(name, k, i + 1), g) for i, (k, g) in enumerate(ordered)]
    raise SeriesReadError(
        frames[0].header,
        "several slices share a position and neither b-value, temporal position, echo, acquisition number "
        "nor trigger time separates them (duplicate instances?)",
    )


def stack_frames(frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray, list[Frame]]:
    """Sort frames along the slice normal, check the geometry, and stack them.

    Parameters
    ----------
    frames : sequence of Frame
        One 3-D group (no repeated position).

    Returns
    -------
    data : numpy.ndarray
        float32, shape ``(columns, rows, slices)`` (i, j, k).
    affine : numpy.ndarray
        4x4 voxel to RAS+ mm.
    ordered : list of Frame
        The frames in ``k`` order.

    Raises
    ------
    SeriesReadError
        Differing orientation, pixel spacing or matrix size; gantry tilt (slices sheared
        along the normal); missing slices; uneven slice spacing.

    Notes
    -----
    Scanners round ImagePositionPatient (GE: an oblique 7 mm stack reads 6.96 to 7.07 mm
    steps), so slice positions are accepted when every step along the normal is within
    ``min(SLICE_JITTER_MM, SLICE_JITTER_REL * step)`` (0.2 mm, at most a quarter of the step) of
    the median step, as dcm2niix converts such stacks without its "Interslice distance varies"
    warning. dcm2niix compares 3-D distances with the first step; this compares distances
    along the normal with the median step, and logs a note (no patient data) when the steps
    vary by more than the exact-stack tolerance. See :func:`_slice_axis` for the affine.
    """
    first = frames[0]
    hdr = first.header
    for f in frames[1:]:
        if np.max(np.abs(f.iop - first.iop)) > ORIENTATION_TOL:
            raise SeriesReadError(hdr, "its slices have different orientations (ImageOrientationPatient)")
        if f.shape != first.shape:
            raise SeriesReadError(
                hdr, f"its slices have different matrix sizes ({f.shape} and {first.shape})"
            )
        if any(
            abs(a - b) > SPACING_REL_TOL * max(abs(b), 1e-6)
            for a, b in zip(f.pixel_spacing, first.pixel_spacing, strict=True)
        ):
            raise SeriesReadError(
                hdr, f"its slices have different pixel spacings ({f.pixel_spacing} and {first.pixel_spacing})"
            )
    row_dir, col_dir = first.iop[:3], first.iop[3:]
    normal = first.normal if first.normal is not None else np.cross(row_dir, col_dir)
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-2
        or abs(np.linalg.norm(col_dir) - 1) > 1e-2
        or abs(np.dot(row_dir, col_dir)) > 1e-2
    ):
        raise SeriesReadError(hdr, "its ImageOrientationPatient is not two orthogonal unit vectors")
    normal = normal / np.linalg.norm(normal)
    dist = np.array([float(np.dot(f.ipp, normal)) for f in frames])
    order = np.argsort(dist, kind="stable")
    ordered = [frames[int(i)] for i in order]
    dist = dist[order]
    nk = len(ordered)
    row_sp, col_sp = first.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_sp
    affine[:3, 1] = col_dir * row_sp
    affine[:3, 3] = ordered[0].ipp
    if nk == 1:
        affine[:3, 2] = normal * (first.thickness or 1.0)
    else:
        affine[:3, 2], affine[:3, 3] = _slice_axis(ordered, dist, normal)
    planes = np.empty((nk, first.shape[0], first.shape[1]), dtype=np.float32)
    for k, f in enumerate(ordered):
        planes[k] = f.pixels()
    # (k, rows, cols) in C order is (cols, rows, k) = (i, j, k) in Fortran order: no copy,
    # and the layout NIfTI files use.
    data = planes.transpose(2, 1, 0)
    return data, LPS_TO_RAS @ affine, ordered


def _slice_axis(
    ordered: Sequence[Frame], dist: np.ndarray, normal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Check the spacing of sorted slices and fit the affine's slice column and origin.

    Parameters
    ----------
    ordered : sequence of Frame
        Two or more frames sorted along the normal.
    dist : numpy.ndarray
        Their positions along the unit ``normal`` (mm), ascending.
    normal : numpy.ndarray
        The unit slice normal (LPS).

    Returns
    -------
    column : numpy.ndarray
        The affine's slice column (LPS mm per slice): the slope of the least-squares line
        through all slice positions against slice index.
    origin : numpy.ndarray
        The first slice's position on that line (LPS mm).

    Raises
    ------
    SeriesReadError
        Slices share a position, are missing, are unevenly spaced beyond the jitter tolerance,
        or are sheared against the normal (gantry tilt).

    Notes
    -----
    For exactly spaced slices the fit is the first position and ``span / (nk - 1)``. For
    jittered positions it is the geometry that best explains all of them. dcm2niix instead
    takes the first slice's position (in InstanceNumber order) and the normal times the 3-D
    distance to the second slice, so on a jittered stack the two differ by dcm2niix's
    first-step error times the slice index (up to about 0.1 mm per slice for positions
    rounded to 0.1 mm) plus the first slice's own rounding.
    """
    hdr = ordered[0].header
    nk = len(ordered)
    steps = np.diff(dist)
    step = float(np.median(steps))
    if step < POSITION_TOL:
        raise SeriesReadError(hdr, "several slices share a position")
    deviation = float(np.max(np.abs(steps - step)))
    exact_tol = max(SPACING_REL_TOL * step * 10, POSITION_TOL * 10)
    jitter_tol = max(exact_tol, min(SLICE_JITTER_MM, SLICE_JITTER_REL * step))
    if deviation > jitter_tol:
        worst = float(steps[np.argmax(np.abs(steps - step))])
        ratio = worst / step
        if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1:
            missing = round(float(np.sum(np.round(steps / step) - 1)))
            raise SeriesReadError(
                hdr,
                f"{missing} slice(s) are missing (a gap of {worst:.3g} mm where slices are {step:.3g} mm apart)",
            )
        raise SeriesReadError(hdr, f"its slice spacing is uneven ({steps.min():.4g} to {steps.max():.4g} mm)")
    positions = np.array([f.ipp for f in ordered], dtype=np.float64)
    index = np.arange(nk, dtype=np.float64) - (nk - 1) / 2
    centre = positions.mean(axis=0)
    column = (index @ (positions - centre)) / float(index @ index)
    origin = centre - column * (nk - 1) / 2
    along = float(np.dot(column, normal)) * (nk - 1)
    shear = float(np.linalg.norm(column - np.dot(column, normal) * normal)) * (nk - 1)
    # In a jittered stack an in-plane drift below the jitter tolerance is rounding, not tilt.
    shear_tol = max(POSITION_TOL * 10, 1e-3 * abs(along), jitter_tol if deviation > exact_tol else 0.0)
    if shear > shear_tol:
        angle = math.degrees(math.atan2(shear, abs(along)))
        raise SeriesReadError(
            hdr,
            f"its slices are sheared by {angle:.2f} degrees against their normal (gantry tilt), which is not supported",
        )
    if deviation > exact_tol:
        log.info(
            "%s: slice positions jitter (steps %.4g to %.4g mm, within %.3g mm of their median %.4g mm, "
            "the tolerance dcm2niix applies); the slice axis is the least-squares fit of all %d positions "
            "(step %.4f mm)",
            describe_series(hdr),
            float(steps.min()),
            float(steps.max()),
            jitter_tol,
            step,
            nk,
            abs(along) / (nk - 1),
        )
    return column, origin
