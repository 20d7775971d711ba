"""Frames of Siemens mosaic instances (many slices tiled into one image)."""

from __future__ import annotations

import math
import warnings

import numpy as np
from pydicom import Dataset
from pydicom.tag import Tag

from dicom_node.io.errors import SeriesReadError
from dicom_node.io.frames import Frame, classic_frames, number, private_number

__all__ = ["is_mosaic", "mosaic_frames"]


def is_mosaic(ds: Dataset) -> bool:
    """Whether ``ds`` is a Siemens mosaic (ImageType contains ``MOSAIC``)."""
    image_type = ds.get("ImageType", None) or []
    if isinstance(image_type, str):
        image_type = image_type.split("\\")
    return any(str(v).upper() == "MOSAIC" for v in image_type)


def _csa_values(ds: Dataset) -> tuple[int | None, np.ndarray | None, float | None]:
    """NumberOfImagesInMosaic, SliceNormalVector and B_value from the CSA image header."""
    elem = ds.get(Tag(0x00291010))
    if elem is None or not isinstance(elem.value, bytes):
        return None, None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel.nicom warns that it is experimental on import
            from nibabel.nicom import csareader

        csa = csareader.read(elem.value)
        n = csareader.get_n_mosaic(csa)
        normal = csareader.get_slice_normal(csa)
        b = csareader.get_b_value(csa)
    # nibabel raises CSAReadError/KeyError/ValueError/struct errors on malformed headers.
    except Exception:  # a malformed private header means "not stated", never a crash
        return None, None, None
    return (
        int(n) if n is not None else None,
        np.asarray(normal, dtype=np.float64) if normal is not None else None,
        float(b) if b is not None else None,
    )


def mosaic_frames(ds: Dataset) -> list[Frame]:
    """Cut a Siemens mosaic instance into its slices.

    The number of slices comes from the CSA header (``NumberOfImagesInMosaic``) or the
    private element (0019,100A); tiles fill a square grid row by row. ImagePositionPatient
    of a mosaic refers to a virtual mosaic-sized slice centred on the real one, so it is
    moved by half the size difference (as nibabel and dcm2niix do). Slices follow the
    CSA SliceNormalVector when present, else ``cross(row, column)``.

    Parameters
    ----------
    ds : pydicom.Dataset
        A mosaic instance (read with pixel data).

    Returns
    -------
    list of Frame
        One frame per slice, all referencing the one instance.

    Raises
    ------
    SeriesReadError
        The number of slices is not stated or does not fit the image.
    """
    n_csa, normal, b_csa = _csa_values(ds)
    n_private = private_number(ds, 0x0019100A, "<H")
    n = n_csa or (int(n_private) if n_private else None)
    if not n:
        raise SeriesReadError(
            ds, "a mosaic instance does not state NumberOfImagesInMosaic (CSA or 0019,100A)"
        )
    (whole,) = classic_frames(ds)
    tiles = math.ceil(math.sqrt(n))
    rows_m, cols_m = whole.shape
    if rows_m % tiles or cols_m % tiles:
        raise SeriesReadError(
            ds, f"a mosaic of {rows_m}x{cols_m} pixels cannot hold {n} tiles in a {tiles}x{tiles} grid"
        )
    rows, cols = rows_m // tiles, cols_m // tiles
    row_sp, col_sp = whole.pixel_spacing
    row_dir, col_dir = whole.iop[:3], whole.iop[3:]
    if normal is None or not np.isfinite(normal).all() or np.linalg.norm(normal) < 0.5:
        normal = np.cross(row_dir, col_dir)
    normal = normal / np.linalg.norm(normal)
    ipp0 = whole.ipp + row_dir * col_sp * (cols_m - cols) / 2.0 + col_dir * row_sp * (rows_m - rows) / 2.0
    step = number(ds.get("SpacingBetweenSlices", None)) or number(ds.get("SliceThickness", None)) or 1.0
    mosaic = whole.pixels()
    b_value = whole.b_value if whole.b_value is not None else b_csa
    frames: list[Frame] = []
    for s in range(n):
        r0, c0 = (s // tiles) * rows, (s % tiles) * cols
        tile = np.ascontiguousarray(mosaic[r0 : r0 + rows, c0 : c0 + cols])
        frames.append(
            Frame(
                ipp=ipp0 + normal * step * s,
                iop=whole.iop,
                pixel_spacing=whole.pixel_spacing,
                shape=(rows, cols),
                pixels=lambda t=tile: t,  # type: ignore[misc]
                ref=whole.ref,
                header=whole.header,
                b_value=b_value,
                b_vector=whole.b_vector,
                temporal=whole.temporal,
                echo=whole.echo,
                acquisition=whole.acquisition
                if whole.acquisition is not None
                else number(ds.get("InstanceNumber", None)),
                trigger=whole.trigger,
                thickness=step,
                normal=normal,
            )
        )
    return frames
