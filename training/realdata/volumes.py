"""Read a corpus volume case as a nibabel image (NIfTI, MINC, or BrainBrowser's raw + JSON header)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

from training.realdata.corpus import CorpusCase, CorpusError, resolve

__all__ = ["load_volume", "read_brainbrowser"]


def read_brainbrowser(raw: Path, header: Path) -> Any:
    """Read a BrainBrowser volume (a MINC volume exported as raw bytes + JSON header).

    The header gives, per MINC dimension, ``start``, ``step``, ``space_length`` and
    ``direction_cosines``; ``order`` lists the dimensions from slowest to fastest in the
    raw bytes. MINC world coordinates are RAS, so the affine's column for a dimension is
    ``step * cosines`` and its origin the sum of ``start * cosines``.

    Parameters
    ----------
    raw, header : Path
        ``*.mnc.raw.gz`` (unsigned 8-bit voxels) and ``*.mnc.header.gz``.

    Returns
    -------
    nibabel.Nifti1Image
        Axes ordered x, y, z.
    """
    import nibabel as nib

    with gzip.open(header, "rt") as fh:
        info = json.load(fh)
    order = info["order"]
    if sorted(order) != ["xspace", "yspace", "zspace"]:
        raise CorpusError(f"{header.name}: 'order' is {order}; expected the three MINC spatial dimensions.")
    shape = [int(info[d]["space_length"]) for d in order]
    with gzip.open(raw, "rb") as fh:
        data = np.frombuffer(fh.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise CorpusError(f"{raw.name} holds {data.size} voxels; its header says {shape}.")
    arr = data.reshape(shape).transpose([order.index(d) for d in ("xspace", "yspace", "zspace")])
    affine = np.eye(4)
    for col, d in enumerate(("xspace", "yspace", "zspace")):
        cos = np.asarray(info[d].get("direction_cosines", np.eye(3)[col]), float)
        affine[:3, col] = float(info[d]["step"]) * cos
        affine[:3, 3] += float(info[d]["start"]) * cos
    return nib.Nifti1Image(np.ascontiguousarray(arr).astype(np.float32), affine)


def load_volume(case: CorpusCase) -> Any:
    """Load a ``kind == "volume"`` case as a nibabel image.

    Parameters
    ----------
    case : CorpusCase
        Paths: one image file, or a BrainBrowser ``*.raw.gz`` followed by its ``*.header.gz``.

    Raises
    ------
    CorpusError
        If the files are missing or the format is not known.
    """
    import nibabel as nib

    files = resolve(case)
    if not files:
        raise CorpusError(f"corpus case {case.id!r}: files of {case.source} are missing.")
    if files[0].name.endswith(".mnc.raw.gz"):
        return read_brainbrowser(files[0], files[1])
    try:
        return nib.load(str(files[0]))
    except Exception as exc:  # nibabel raises many types for an unknown format
        raise CorpusError(f"corpus case {case.id!r}: {files[0].name} is not an image nibabel reads ({exc}).") from exc
