"""The :class:`Volume`: one 3-D image in patient space, read from a DICOM series."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydicom import Dataset

__all__ = ["LPS_TO_RAS", "SliceRef", "Volume"]

#: Flips the first two axes: DICOM LPS+ <-> NIfTI RAS+ (its own inverse).
LPS_TO_RAS: np.ndarray = np.diag([-1.0, -1.0, 1.0, 1.0])

#: ``(sop_class_uid, sop_instance_uid, frame_number)``; frame_number is ``None`` for a
#: single-frame instance and 1-based for a multi-frame instance.
SliceRef = tuple[str, str, int | None]


@dataclass
class Volume:
    """One 3-D image with its geometry in patient space.

    Attributes
    ----------
    data : numpy.ndarray
        float32 voxels of shape ``(ni, nj, nk)``: ``i`` is the column index within a
        slice, ``j`` the row index, ``k`` the slice index ordered along the slice normal
        (``cross(row direction, column direction)``), i.e. nibabel's index order.
        Rescale slope and intercept are applied. Volumes read from DICOM are
        Fortran-ordered (the NIfTI layout); use ``np.ascontiguousarray`` where C order
        matters.
    affine : numpy.ndarray
        4x4 matrix mapping ``(i, j, k, 1)`` to RAS+ millimetres (NIfTI convention).
        :attr:`affine_lps` gives the DICOM (LPS+) form.
    series_uid : str
        SeriesInstanceUID of the source series.
    frame_of_reference_uid : str or None
        FrameOfReferenceUID of the source series.
    slice_refs : list of SliceRef
        For each ``k``: ``(sop_class_uid, sop_instance_uid, frame_number or None)`` of
        the source image (frame); what a SEG references.
    headers : list of pydicom.Dataset
        One header per ``k`` (no pixel data) for single-frame series; for a multi-frame
        (Enhanced MR, mosaic) series the one source dataset, without pixel data.
    meta : dict
        Acquisition parameters: ``tr``, ``te``, ``ti``, ``flip_angle``, ``b_value``,
        ``manufacturer``, ``model``, ``field_strength``, ``sequence_name``,
        ``series_description``, ``series_number``, ``modality``, ``study_uid`` (values
        are ``None`` where the header has none).
    split : str or None
        For a 4-D series split into volumes, the key of this volume such as
        ``"b1000"`` or ``"t3"``; ``None`` for a plain 3-D series.
    label : str
        A human-readable name: the split key when there is one, else ``""``.
    """

    data: np.ndarray
    affine: np.ndarray
    series_uid: str
    frame_of_reference_uid: str | None = None
    slice_refs: list[SliceRef] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"Volume data must be 3-D (i, j, k); got shape {self.data.shape}.")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4; got shape {self.affine.shape}.")
        if self.slice_refs and len(self.slice_refs) != self.data.shape[2]:
            raise ValueError(
                f"Volume has {self.data.shape[2]} slices but {len(self.slice_refs)} slice references."
            )
        if not self.label and self.split:
            self.label = self.split

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(ni, nj, nk)``."""
        ni, nj, nk = self.data.shape
        return int(ni), int(nj), int(nk)

    @property
    def affine_lps(self) -> np.ndarray:
        """The 4x4 matrix mapping ``(i, j, k, 1)`` to DICOM LPS+ millimetres."""
        return LPS_TO_RAS @ self.affine

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``i``, ``j``, ``k``."""
        sp = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(sp[0]), float(sp[1]), float(sp[2])

    @property
    def name(self) -> str:
        """A log-safe description: series number, description, split (no UIDs, no names)."""
        number = self.meta.get("series_number")
        desc = self.meta.get("series_description") or ""
        parts = [f"series {number if number is not None else '?'}"]
        if desc:
            parts.append(repr(desc))
        if self.split:
            parts.append(f"[{self.split}]")
        return " ".join(parts)

    def with_data(self, data: np.ndarray) -> Volume:
        """Return a copy on the same grid holding other voxels (e.g. a label map).

        Parameters
        ----------
        data : numpy.ndarray
            Array of the same shape as :attr:`data`.

        Returns
        -------
        Volume
            A new volume sharing geometry, references and metadata.
        """
        if data.shape != self.data.shape:
            raise ValueError(f"with_data: shape {data.shape} differs from the volume's {self.data.shape}.")
        return replace(self, data=data, affine=self.affine.copy())
