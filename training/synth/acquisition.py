"""Acquisition realism: Rician noise, bias field, and resampling onto the acquired grid.

An acquired series is what a scanner writes: slices of ``matrix x matrix`` pixels of
``pixel_mm`` in one plane (axial, sagittal or coronal, optionally angulated), with a
slice profile of ``slice_thickness_mm`` (full width at half maximum), spaced by
``slice_spacing_mm``. Voxel values are quantised to the integers a DICOM file stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from training.synth.protocols import Protocol

__all__ = [
    "LPS_TO_RAS",
    "AcquiredSeries",
    "AcquiredStack",
    "bias_field",
    "motion_ghosting",
    "plane_axes_lps",
    "quantise",
    "resample_to_stack",
    "resample_with_labels",
    "rician",
    "stack_affine",
]

LPS_TO_RAS: np.ndarray = np.diag([-1.0, -1.0, 1.0, 1.0])

#: (row direction, column direction) in LPS for each plane, as DICOM ImageOrientationPatient.
_PLANES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}


@dataclass
class AcquiredStack:
    """One stack of parallel slices, as written to DICOM.

    Attributes
    ----------
    data : numpy.ndarray
        float32 stored values (integers), shape ``(ni, nj, nk)``: ``i`` column, ``j`` row,
        ``k`` slice along ``cross(row direction, column direction)`` (the order of
        :class:`dicom_node.io.volume.Volume`).
    labels : numpy.ndarray
        uint8 BraTS labels resampled (nearest) onto the same grid.
    affine : numpy.ndarray
        4x4 ``(i, j, k, 1)`` to RAS mm.
    key : str
        ``""``, ``"b0"``/``"b1000"`` for diffusion, or the plane for a localizer.
    b_value : float or None
        Diffusion weighting (s/mm^2) of this stack.
    """

    data: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    key: str = ""
    b_value: float | None = None

    @property
    def affine_lps(self) -> np.ndarray:
        """``(i, j, k, 1)`` to DICOM LPS mm."""
        return LPS_TO_RAS @ self.affine


@dataclass
class AcquiredSeries:
    """A series as acquired: its protocol and one or more stacks."""

    sequence: str
    protocol: Protocol
    stacks: list[AcquiredStack] = field(default_factory=list)


#: The noise of one image is drawn in this many fixed chunks (one seed each), so the
#: numbers do not depend on how many threads draw them.
_NOISE_CHUNKS = 4


def rician(signal: np.ndarray, sigma: float, seed: int | Sequence[int], threads: int | None = None) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise (Rician), float32.

    Parameters
    ----------
    signal : numpy.ndarray
        Noise-free magnitude (float32; used as scratch space and returned).
    sigma : float
        Standard deviation of the noise in each of the real and imaginary channels.
    seed : int or sequence of int
        Seeds the noise. The image is cut into ``_NOISE_CHUNKS`` fixed chunks, each with
        its own child seed (``numpy.random.SeedSequence.spawn``) for a torch CPU
        generator; the numbers are the same for any thread count.
    threads : int, optional
        Worker threads (default: torch's CPU thread count, at most ``_NOISE_CHUNKS``).

    Returns
    -------
    numpy.ndarray
        ``sqrt((S + n1)^2 + n2^2)``, written into ``signal``'s buffer.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    out = np.ascontiguousarray(signal, dtype=np.float32)
    flat = torch.from_numpy(out.reshape(-1))
    bounds = np.linspace(0, flat.numel(), _NOISE_CHUNKS + 1).astype(np.int64)
    states = np.random.SeedSequence(seed).spawn(_NOISE_CHUNKS)
    s = float(sigma)

    def chunk(c: int) -> None:
        part = flat[int(bounds[c]): int(bounds[c + 1])]
        entropy = int(states[c].generate_state(1, dtype=np.uint64)[0]) & 0x7FFF_FFFF_FFFF_FFFF
        gen = torch.Generator().manual_seed(entropy)
        re = torch.randn(part.shape, generator=gen).mul_(s).add_(part)
        im = torch.randn(part.shape, generator=gen).mul_(s)
        torch.hypot(re, im, out=part)

    if threads is None:
        threads = torch.get_num_threads()
    n = max(1, min(int(threads), _NOISE_CHUNKS))
    if n == 1:
        for c in range(_NOISE_CHUNKS):
            chunk(c)
    else:  # torch releases the GIL, so the chunks run in parallel
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(chunk, range(_NOISE_CHUNKS)))
    return out


def motion_ghosting(image: np.ndarray, severity: float, rng: np.random.Generator, axis: int = 1,
                    voxel_mm: float = 1.0) -> np.ndarray:
    """Ghosting from rigid head motion during the phase-encoding of a 2-D acquisition.

    A random subset of phase-encode lines (``0.3 * severity`` of them) is acquired
    with the head shifted by up to ``3 * severity`` mm along ``axis``: their k-space
    lines get the matching linear phase, which leaves ghosts along that axis.

    Parameters
    ----------
    image : numpy.ndarray
        Noise-free magnitude image.
    severity : float
        0 (none) to 1 (strong).
    rng : numpy.random.Generator
        Source of randomness.
    axis : int
        Phase-encoding axis.
    voxel_mm : float
        Voxel size along ``axis``.

    Returns
    -------
    numpy.ndarray
        float32 magnitude with ghosts.
    """
    if severity <= 0:
        return image
    n = image.shape[axis]
    k = np.fft.fft(image, axis=axis)
    freqs = np.fft.fftfreq(n)
    moved = np.less(rng.random(n), 0.3 * severity)
    moved[0] = False  # the centre of k-space (DC line) is acquired still
    shift_vox = rng.uniform(-3.0, 3.0, n) * severity / voxel_mm
    phase = np.where(moved, np.exp(-2j * np.pi * freqs * shift_vox), 1.0)
    shape = [1, 1, 1]
    shape[axis] = n
    k *= phase.reshape(shape)
    return np.abs(np.fft.ifft(k, axis=axis)).astype(np.float32)


def bias_field(shape: tuple[int, int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative receive-coil bias field with mean about 1.

    The log field is a sum of three smooth 2-D fields, one per pair of axes, each drawn
    on a 4 x 4 lattice and interpolated (cubic); the product of their exponentials is
    formed by broadcasting, which keeps it cheap on a 1 mm grid.

    Parameters
    ----------
    shape : tuple of int
        Grid shape.
    amplitude : float
        Standard deviation of the log field (0.1 to 0.3 is typical).
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        float32 ``exp(smooth field)``.
    """
    from scipy import ndimage as ndi

    def plane(n0: int, n1: int) -> np.ndarray:
        small = rng.standard_normal((4, 4)) * (amplitude / np.sqrt(3.0))
        up = ndi.zoom(small, (n0 / 4.0, n1 / 4.0), order=3, mode="nearest", grid_mode=True)[:n0, :n1]
        return np.exp(up).astype(np.float32)

    ni, nj, nk = shape
    field = plane(ni, nj)[:, :, None] * plane(ni, nk)[:, None, :]
    field *= plane(nj, nk)[None, :, :]
    return field


def plane_axes_lps(plane: str, angulation_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines (LPS) of a plane, tilted about the LR axis.

    Parameters
    ----------
    plane : str
        ``"axial"``, ``"sagittal"`` or ``"coronal"``.
    angulation_deg : float
        Tilt about the patient's left-right axis (as an AC-PC angulation).

    Returns
    -------
    tuple of numpy.ndarray
        Unit vectors ``(row, col)``.
    """
    if plane not in _PLANES:
        raise ValueError(f"Unknown plane {plane!r}; expected axial, sagittal or coronal.")
    row, col = (np.asarray(v, dtype=np.float64) for v in _PLANES[plane])
    a = np.deg2rad(angulation_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return rot @ row, rot @ col


def stack_affine(protocol: Protocol, plane: str, centre_ras: np.ndarray, angulation_deg: float = 0.0,
                 n_slices: int | None = None) -> tuple[np.ndarray, tuple[int, int, int]]:
    """RAS affine and shape of a stack centred on ``centre_ras``.

    Parameters
    ----------
    protocol : Protocol
        Supplies matrix, pixel size and slice spacing.
    plane : str
        Slice plane.
    centre_ras : numpy.ndarray
        Centre of the field of view (RAS mm).
    angulation_deg : float
        Tilt about the left-right axis.
    n_slices : int, optional
        Overrides ``protocol.n_slices``.

    Returns
    -------
    tuple
        ``(affine_ras, (ni, nj, nk))``.
    """
    row, col = plane_axes_lps(plane, angulation_deg)
    normal = np.cross(row, col)
    n = protocol.n_slices if n_slices is None else n_slices
    m = protocol.matrix
    p = protocol.pixel_mm
    s = protocol.slice_spacing_mm
    centre_lps = LPS_TO_RAS[:3, :3] @ np.asarray(centre_ras, dtype=np.float64)
    origin = centre_lps - (m - 1) / 2.0 * p * row - (m - 1) / 2.0 * p * col - (n - 1) / 2.0 * s * normal
    lps = np.eye(4)
    lps[:3, 0] = row * p
    lps[:3, 1] = col * p
    lps[:3, 2] = normal * s
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps, (m, m, n)


#: Output stacks are sampled in this many fixed slabs (on parallel threads); fixed so that
#: the numbers do not depend on the thread count.
_STACK_SLABS = 4


def resample_to_stack(
    volume: np.ndarray,
    volume_affine: np.ndarray,
    stack_aff: np.ndarray,
    stack_shape: tuple[int, int, int],
    *,
    thickness_mm: float,
    pixel_mm: float,
    order: int = 1,
) -> np.ndarray:
    """Resample a volume onto a stack grid with the slice profile and in-plane blur.

    Parameters
    ----------
    volume : numpy.ndarray
        Source on its own grid.
    volume_affine : numpy.ndarray
        Source voxel-to-RAS.
    stack_aff : numpy.ndarray
        Target voxel-to-RAS.
    stack_shape : tuple of int
        Target shape.
    thickness_mm, pixel_mm : float
        Slice profile FWHM and in-plane pixel size; the source is blurred along each of
        its axes by the target's footprint in that direction (not for ``order=0``).
    order : int
        1 for trilinear (images), 0 for nearest (labels).

    Returns
    -------
    numpy.ndarray
        float32 of ``stack_shape``; zero outside the source.
    """
    src = _slice_profile(volume, volume_affine, stack_aff, thickness_mm, pixel_mm) if order > 0 else volume
    sources = [(np.ascontiguousarray(src, dtype=np.float32), "bilinear" if order > 0 else "nearest")]
    return _sample_stack(sources, np.linalg.inv(volume_affine) @ stack_aff, stack_shape, volume.shape)[0]


def resample_with_labels(
    volume: np.ndarray,
    labels: np.ndarray,
    volume_affine: np.ndarray,
    stack_aff: np.ndarray,
    stack_shape: tuple[int, int, int],
    *,
    thickness_mm: float,
    pixel_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """An image (trilinear, with the slice profile) and its label map (nearest) on a stack,
    sampled through one grid; see :func:`resample_to_stack`.

    Returns
    -------
    tuple of numpy.ndarray
        ``(data, labels)``: float32 and uint8 of ``stack_shape``.
    """
    src = _slice_profile(volume, volume_affine, stack_aff, thickness_mm, pixel_mm)
    sources = [(np.ascontiguousarray(src, dtype=np.float32), "bilinear"),
               (np.ascontiguousarray(labels, dtype=np.float32), "nearest")]
    data, lab = _sample_stack(sources, np.linalg.inv(volume_affine) @ stack_aff, stack_shape, volume.shape)
    return data, np.rint(lab).astype(np.uint8)


def _slice_profile(volume: np.ndarray, volume_affine: np.ndarray, stack_aff: np.ndarray, thickness_mm: float,
                   pixel_mm: float) -> np.ndarray:
    """Blur the source along each axis by the stack's footprint (slice profile, pixel)."""
    from scipy import ndimage as ndi

    src_vox = np.linalg.norm(volume_affine[:3, :3], axis=0)
    src: np.ndarray = volume.astype(np.float32, copy=False)
    normal = stack_aff[:3, 2] / np.linalg.norm(stack_aff[:3, 2])
    sig = []
    for axis in range(3):
        d = np.zeros(3)
        d[axis] = 1.0
        footprint = abs(float(normal @ (volume_affine[:3, :3] @ d))) / src_vox[axis]
        width = footprint * thickness_mm + (1.0 - footprint) * pixel_mm
        sig.append(max(width - src_vox[axis], 0.0) / 2.355 / src_vox[axis])
    if max(sig) > 0.2:
        src = ndi.gaussian_filter(src, [s if s > 0.2 else 0.0 for s in sig], mode="constant")
    return src


def _sample_stack(sources: list[tuple[np.ndarray, str]], to_src: np.ndarray, stack_shape: tuple[int, int, int],
                  src_shape: tuple[int, ...]) -> list[np.ndarray]:
    """Sample each source through the affine voxel map ``to_src`` onto ``stack_shape``.

    The stack is cut into ``_STACK_SLABS`` slabs along its first axis; each slab builds its
    own sampling grid and samples every source through it, slabs on parallel threads.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    outs = [np.empty(stack_shape, dtype=np.float32) for _ in sources]
    tensors = [(torch.from_numpy(src)[None, None], mode) for src, mode in sources]
    n0 = int(stack_shape[0])
    n_slabs = max(1, min(_STACK_SLABS, n0))
    edges = np.linspace(0, n0, n_slabs + 1).astype(int)

    def slab(i: int) -> None:
        a, b = int(edges[i]), int(edges[i + 1])
        shift = np.eye(4)
        shift[0, 3] = a
        sub = (b - a, int(stack_shape[1]), int(stack_shape[2]))
        theta = _normalised_theta(to_src @ shift, sub, src_shape)
        grid = torch.nn.functional.affine_grid(torch.from_numpy(theta.astype(np.float32))[None], [1, 1, *sub],
                                               align_corners=True)
        for (src, mode), out in zip(tensors, outs, strict=True):
            res = torch.nn.functional.grid_sample(src, grid, mode=mode, padding_mode="zeros", align_corners=True)
            out[a:b] = res[0, 0].numpy()

    threads = max(1, min(torch.get_num_threads(), n_slabs))
    if threads == 1:
        for i in range(n_slabs):
            slab(i)
    else:  # torch releases the GIL
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(slab, range(n_slabs)))
    return outs


def _normalised_theta(to_src: np.ndarray, out_shape: tuple[int, ...], src_shape: tuple[int, ...]) -> np.ndarray:
    """The 3x4 ``affine_grid`` matrix for a voxel-to-voxel map, in (k, j, i) normalised order."""

    def to_norm(shape: tuple[int, ...]) -> np.ndarray:
        m = np.eye(4)
        for axis, n in enumerate(shape[:3]):
            half = max(n - 1, 1) / 2.0
            m[axis, axis] = 1.0 / half
            m[axis, 3] = -1.0
        return m

    perm = np.eye(4)[[2, 1, 0, 3]]
    full = perm @ to_norm(src_shape) @ to_src @ np.linalg.inv(to_norm(out_shape)) @ perm
    return full[:3, :4]


def quantise(data: np.ndarray, maximum: float = 65535.0) -> np.ndarray:
    """Round to the unsigned integers a DICOM file stores (kept as float32)."""
    return np.clip(np.rint(data), 0.0, maximum).astype(np.float32)
