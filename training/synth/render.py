"""Per-tissue signals for a protocol, and their partial-volume mixture into an image."""

from __future__ import annotations

import numpy as np

from training.synth.physics import (
    diffusion,
    inversion_recovery,
    mprage,
    spin_echo,
    spoiled_gre,
    with_gadolinium,
)
from training.synth.protocols import Protocol
from training.synth.tissue import Tissue, TissueParameters

__all__ = ["MAP_TISSUES", "TUMOUR_TISSUES", "mix", "tissue_signals"]

#: Tissue of each template map channel (see ``templates.MAP_NAMES``).
MAP_TISSUES: tuple[Tissue, ...] = (
    Tissue.CSF, Tissue.GM, Tissue.WM, Tissue.FAT, Tissue.MUSCLE, Tissue.BONE, Tissue.BLOOD,
)
#: Remaining signal of flowing blood on spin-echo based sequences (flow void).
FLOW_VOID = 0.25
#: Tissue of each tumour fraction channel (necrosis, oedema, enhancing).
TUMOUR_TISSUES: tuple[Tissue, ...] = (Tissue.NECROSIS, Tissue.OEDEMA, Tissue.ENHANCING)


def tissue_signals(protocol: Protocol, params: TissueParameters, gd_mM: np.ndarray, b_value: float = 0.0) -> np.ndarray:
    """Signal of every tissue for one protocol.

    Parameters
    ----------
    protocol : Protocol
        Sequence kind and timing.
    params : TissueParameters
        Pre-contrast tissue parameters.
    gd_mM : numpy.ndarray
        Gadolinium concentration per tissue, used when ``protocol.contrast``.
    b_value : float
        Diffusion weighting for ``kind == "dwi"``.

    Returns
    -------
    numpy.ndarray
        One signal per :class:`Tissue` value.
    """
    p = with_gadolinium(params, gd_mM) if protocol.contrast else params
    k = protocol.kind
    if k in ("se", "tse", "ir", "dwi", "adc"):
        s = _spin_echo_kind(p, protocol, b_value)
        if not protocol.contrast:  # with gadolinium, slow sinus flow enhances instead
            s[Tissue.BLOOD] *= FLOW_VOID
        return s
    if k == "mprage":
        return mprage(p, protocol.tr, protocol.te, float(protocol.ti or 0.0), protocol.flip_deg)
    if k in ("gre", "localizer"):
        return spoiled_gre(p, protocol.tr, protocol.te, protocol.flip_deg)
    raise ValueError(f"Protocol kind {k!r} has no signal model; expected one of se, tse, ir, mprage, gre, dwi.")


def _spin_echo_kind(p: TissueParameters, protocol: Protocol, b_value: float) -> np.ndarray:
    if protocol.kind in ("se", "tse"):
        out: np.ndarray = spin_echo(p, protocol.tr, protocol.te).copy()
    elif protocol.kind == "ir":
        out = inversion_recovery(p, protocol.tr, protocol.te, float(protocol.ti or 0.0)).copy()
    else:
        out = diffusion(p, protocol.tr, protocol.te, b_value)
    return out


#: Voxels per block of :func:`_weighted_sums` (7 float32 maps of a block stay in cache).
_BLOCK = 1 << 17


def _weighted_sums(maps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``weights @ maps`` for ``(c, n)`` maps and ``(k, c)`` weights, reading the maps once.

    The maps are walked in cache-sized blocks; within a block each output row is summed
    channel by channel in a fixed order, so a row's values do not depend on which other
    rows are computed with it (a BLAS product of k rows may round differently from one of
    a single row). Blocks are shared between threads (numpy releases the GIL).
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    n_img, n_map = weights.shape
    n = maps.shape[1]
    out = np.empty((n_img, n), dtype=np.float32)
    w = weights.astype(np.float32)

    def block(start: int) -> None:
        stop = min(start + _BLOCK, n)
        tmp = np.empty(stop - start, dtype=np.float32)
        for i in range(n_img):
            acc = out[i, start:stop]
            np.multiply(maps[0, start:stop], w[i, 0], out=acc)
            for c in range(1, n_map):
                np.multiply(maps[c, start:stop], w[i, c], out=tmp)
                acc += tmp

    starts = range(0, n, _BLOCK)
    threads = max(1, min(torch.get_num_threads(), 4))
    if threads == 1:
        for start in starts:
            block(start)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(block, starts))
    return out


def mix(maps: np.ndarray, tumour: np.ndarray | None, signals: np.ndarray,
        box: tuple[slice, ...] | None = None, texture: np.ndarray | None = None) -> np.ndarray:
    """Partial-volume mixture ``(1 - T) sum_m f_m S_m + sum_c t_c S_c``.

    Parameters
    ----------
    maps : numpy.ndarray
        Warped tissue fractions, shape ``(7,) + grid`` in ``MAP_TISSUES`` order.
    tumour : numpy.ndarray or None
        Tumour fractions, shape ``(3,) + box shape`` in ``TUMOUR_TISSUES`` order.
    signals : numpy.ndarray
        Per-tissue signals from :func:`tissue_signals`, shape ``(n_tissue,)`` for one
        image or ``(k, n_tissue)`` for ``k`` images rendered in one pass over ``maps``.
    box : tuple of slice, optional
        Where ``tumour`` lies in the grid (the whole grid when omitted).
    texture : numpy.ndarray, optional
        Multiplies the tumour's own signal voxel by voxel (shape of the box):
        heterogeneity within each compartment.

    Returns
    -------
    numpy.ndarray
        float32 image on the grid, or ``(k,) + grid`` images for 2-D ``signals``.
    """
    shape = maps.shape[1:]
    sig = np.atleast_2d(np.asarray(signals))
    s_maps = np.ascontiguousarray(sig[:, [t.value for t in MAP_TISSUES]], dtype=np.float32)
    imgs = _weighted_sums(maps.reshape(len(MAP_TISSUES), -1), s_maps).reshape(len(sig), *shape)
    if tumour is not None:
        region = box if box is not None else tuple(slice(0, n) for n in shape)
        s_t = np.ascontiguousarray(sig[:, [t.value for t in TUMOUR_TISSUES]], dtype=np.float32)
        keep = 1.0 - tumour.sum(axis=0)
        for i in range(len(sig)):
            sub = imgs[(i, *region)]
            sub *= keep
            own = np.tensordot(s_t[i], tumour, axes=1)
            if texture is not None:
                own *= texture
            sub += own
    return imgs if np.ndim(signals) == 2 else imgs[0]
