"""A small brain-tumour phantom written as an MR series in any orientation, with its exact
label map, and the node's SEG and SR made from it (the product's writers).

The phantom lives in patient space (LPS, mm): a head ellipsoid and, off the midline on the
patient's left, an elliptical tumour with a necrotic core (label 1), an enhancing rim
(label 3) and oedema (label 2). Each series samples it at its voxel centres, so the label
map on the series' grid is exact; the tumour covers only the middle slices, so an overlay
on a slice without tumour, a one-slice shift or a left-right flip is visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import MRImageStorage, generate_uid

from tests.io.series_factory import _ds_str, _finish, _image_pixels, base_dataset, orientation_cosines

__all__ = ["PhantomSeries", "label_phantom", "write_phantom_series"]

#: Tumour centre (LPS mm): +x is the patient's left.
TUMOUR_CENTRE = np.array([32.0, -12.0, 6.0])
#: In-plane rotation of the tumour ellipsoid (degrees about z).
TUMOUR_ANGLE = 30.0
#: Semi-axes (mm) of the three nested ellipsoids: necrosis, enhancing rim, oedema.
NECROSIS_AXES = np.array([9.0, 5.0, 6.0])
ENHANCING_AXES = np.array([17.0, 11.0, 12.0])
OEDEMA_AXES = np.array([25.0, 18.0, 17.0])
HEAD_AXES = np.array([72.0, 90.0, 65.0])
INTENSITY = {0: 0.0, -1: 700.0, 1: 250.0, 2: 1100.0, 3: 1900.0}


def _inside(points: np.ndarray, axes: np.ndarray) -> np.ndarray:
    a = np.radians(TUMOUR_ANGLE)
    rot = np.array([[np.cos(a), np.sin(a), 0.0], [-np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    local = (points - TUMOUR_CENTRE) @ rot.T
    return np.sum((local / axes) ** 2, axis=-1) <= 1.0


def label_phantom(points: np.ndarray) -> np.ndarray:
    """Labels at LPS points (..., 3): 0 outside the head, -1 brain, 1 necrosis, 2 oedema, 3 enhancing."""
    out = np.where(np.sum((points / HEAD_AXES) ** 2, axis=-1) <= 1.0, -1, 0).astype(np.int16)
    out[_inside(points, OEDEMA_AXES)] = 2
    out[_inside(points, ENHANCING_AXES)] = 3
    out[_inside(points, NECROSIS_AXES)] = 1
    return out


@dataclass
class PhantomSeries:
    """One written series with its truth.

    Attributes
    ----------
    paths : list of Path
        The files.
    labels : numpy.ndarray
        Label map on the series' grid, ``(i, j, k)`` = (column, row, slice by position),
        values 0 (background), 1 necrosis, 2 oedema, 3 enhancing tumour.
    affine_lps : numpy.ndarray
        Voxel ``(i, j, k)`` to LPS mm.
    study_uid, series_uid, frame_uid : str
    sop_uids_by_k : list of str
    """

    paths: list[Path]
    labels: np.ndarray
    affine_lps: np.ndarray
    study_uid: str
    series_uid: str
    frame_uid: str
    sop_uids_by_k: list[str]


def write_phantom_series(out_dir: Path, *, orientation: str = "axial", shape: tuple[int, int, int] = (96, 96, 24),
                         spacing: tuple[float, float, float] = (2.5, 2.5, 5.0), instance_order: str = "with",
                         study_uid: str | None = None, description: str = "t1_mprage_post",
                         series_number: int = 5) -> PhantomSeries:
    """Write the phantom as a single-frame MR series centred on the head.

    Parameters
    ----------
    out_dir : Path
        Folder for the files.
    orientation : str
        ``axial``, ``sagittal``, ``coronal`` or ``oblique`` (see
        :func:`tests.io.series_factory.orientation_cosines`).
    shape : tuple of int
        Columns, rows, slices.
    spacing : tuple of float
        Column spacing, row spacing, slice spacing (mm).
    instance_order : str
        ``with``: InstanceNumber rises with slice position; ``against``: it falls.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    row_dir, col_dir = orientation_cosines(orientation)
    normal = np.cross(row_dir, col_dir)
    ni, nj, nk = shape
    affine = np.eye(4)
    affine[:3, 0] = row_dir * spacing[0]
    affine[:3, 1] = col_dir * spacing[1]
    affine[:3, 2] = normal * spacing[2]
    centre_index = np.array([(ni - 1) / 2, (nj - 1) / 2, (nk - 1) / 2])
    affine[:3, 3] = -affine[:3, :3] @ centre_index  # the grid's centre on the head's centre
    ii, jj, kk = np.meshgrid(np.arange(ni), np.arange(nj), np.arange(nk), indexing="ij")
    points = np.stack([ii, jj, kk], axis=-1).astype(np.float64) @ affine[:3, :3].T + affine[:3, 3]
    truth = label_phantom(points)
    image = np.zeros(truth.shape, np.float32)
    for value, level in INTENSITY.items():
        image[truth == value] = level
    rng = np.random.default_rng(7)
    image += rng.normal(0, 25, image.shape).astype(np.float32) * (truth != 0)
    stored = np.clip(image, 0, 4095).astype(np.uint16)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    numbers = list(range(nk)) if instance_order == "with" else list(range(nk))[::-1]
    paths: list[Path] = []
    sops: list[str] = []
    for k in range(nk):
        ds = base_dataset(study_uid, series_uid, frame_uid, series_number=series_number, description=description)
        ds.PatientName = "Phantom^Viewer"
        ds.PatientID = "VIEWER-PHANTOM"
        ds.SOPInstanceUID = generate_uid()
        sops.append(str(ds.SOPInstanceUID))
        ds.InstanceNumber = numbers[k] + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.SpacingBetweenSlices = f"{spacing[2]:g}"
        ds.PixelSpacing = _ds_str([spacing[1], spacing[0]])
        ds.ImageOrientationPatient = _ds_str(np.concatenate([row_dir, col_dir]))
        ipp = affine[:3, :3] @ np.array([0, 0, k]) + affine[:3, 3]
        ds.ImagePositionPatient = _ds_str(ipp)
        ds.SliceLocation = f"{float(np.dot(ipp, normal)):.6g}"
        ds.WindowCenter = "1000"
        ds.WindowWidth = "2200"
        _image_pixels(ds, stored[:, :, k].T)
        path = out_dir / f"im{k:04d}.dcm"
        _finish(ds, MRImageStorage, path, None)
        paths.append(path)
    labels = np.where(truth > 0, truth, 0).astype(np.uint8)
    return PhantomSeries(paths, labels, affine, study_uid, series_uid, frame_uid, sops)
