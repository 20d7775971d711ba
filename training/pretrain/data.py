"""Unlabelled multi-sequence MRI for pretraining.

Subjects come from any mix of

* folders of subject folders as the synthetic engine writes them
  (``<root>/<subject>/<SEQ>.nii.gz`` and optionally ``params.json``),
* a single subject folder, or a folder of NIfTI files named by sequence (``mrinode convert``
  output),
* a JSON manifest (:mod:`training.manifest` format: ``{"subjects": [{"id": ..., "sequences":
  {"T1": {"path": ..., "meta": {"tr": ..., "te": ..., "flip": ...}}}}]}``; a sequence entry
  may also be a bare path),
* the synthetic engine itself, in memory (``{"synth": {"subjects": N, "seed": S}}``).

Every subject may have any subset of sequences. Samples use one fixed channel layout
(``sequences``); a missing sequence is a zero channel with ``present = 0``, which is how the
segmenters are fine-tuned too (sequence dropout). Volumes are put in RAS, resampled to
``voxel_mm``, z-scored over the head (the engine's own preprocessing) and cached in memory; a sample is a random crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dicom_node.sequences import parse_sequence_label
from training.pretrain.sources import PARAM_NAMES, UnlabelledSubject, collect_subjects, normalise_params

__all__ = [
    "PARAM_NAMES",
    "PretrainDataset",
    "UnlabelledSubject",
    "collect_subjects",
    "load_subject",
    "normalise_params",
]


def _load_volume(ref: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(data, affine)`` of a NIfTI path or an in-memory ``(array, affine)`` pair."""
    if isinstance(ref, tuple):
        arr, affine = ref
        return np.asarray(arr, dtype=np.float32), np.asarray(affine, dtype=np.float64)
    import nibabel as nib

    try:
        img: Any = nib.load(str(ref))
        arr = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types; the file is named in the message
        raise ValueError(f"cannot read NIfTI volume {ref}: {exc}") from exc
    if arr.ndim == 4:
        arr = arr[..., 0]
    return arr, np.asarray(img.affine, dtype=np.float64)


def load_subject(subject: UnlabelledSubject, sequences: Sequence[str], voxel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Put a subject's sequences on one RAS grid, as the inference engine does.

    The grid, resampling and foreground z-score are :mod:`models.preprocess`'s, so that
    pretraining sees the intensities fine-tuning and inference see.

    Parameters
    ----------
    subject : UnlabelledSubject
        The subject.
    sequences : sequence of str
        Channel layout.
    voxel_mm : float
        Grid spacing.

    Returns
    -------
    tuple of numpy.ndarray
        ``image`` ``(C, X, Y, Z)`` float32 (zeros for missing sequences) and ``present`` ``(C,)``.
    """
    from models.preprocess import ras_grid, resample, zscore_foreground

    loaded = {q: _load_volume(subject.images[q]) for q in sequences if q in subject.images}
    if not loaded:
        raise ValueError(f"subject {subject.subject_id} has none of the sequences {list(sequences)}.")
    ref_data, ref_affine = next(iter(loaded.values()))
    shape, affine = ras_grid(ref_data.shape[:3], ref_affine, [voxel_mm] * 3)
    stack = np.zeros((len(sequences), *shape), dtype=np.float32)
    present = np.zeros(len(sequences), dtype=bool)
    for c, q in enumerate(sequences):
        if q in loaded:
            data, aff = loaded[q]
            stack[c] = resample(data[None], aff, shape, affine)[0].numpy()
            present[c] = True
    return zscore_foreground(stack, list(present)).astype(np.float32), present


class PretrainDataset(Dataset[dict[str, torch.Tensor]]):
    """Random crops of unlabelled subjects on a fixed channel layout.

    Parameters
    ----------
    subjects : sequence of UnlabelledSubject
        From :func:`collect_subjects`.
    sequences : sequence of str
        Channel layout, e.g. ``["T1", "T1C", "T2", "FLAIR"]``.
    patch : sequence of int
        Crop size (3 values); for ``slice_2d`` the first two are used.
    voxel_mm : float
        Grid spacing the volumes are resampled to.
    slice_2d : bool
        Return one axial slice ``(C, H, W)`` instead of a 3D crop.
    min_sequences : int
        Subjects with fewer of the layout's sequences are left out (2 for cross-sequence).
    seed : int
        Base seed of the crop positions (combined with ``rank`` and a call counter).
    rank : int
        Process rank in distributed runs.

    Raises
    ------
    ValueError
        If no subject has enough of the layout's sequences.
    """

    def __init__(
        self,
        subjects: Sequence[UnlabelledSubject],
        sequences: Sequence[str],
        patch: Sequence[int],
        voxel_mm: float = 2.0,
        *,
        slice_2d: bool = False,
        min_sequences: int = 1,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        self.sequences = [parse_sequence_label(s).value for s in sequences]
        self.subjects = [s for s in subjects if sum(q in s.images for q in self.sequences) >= min_sequences]
        if not self.subjects:
            raise ValueError(
                f"no pretraining subject has {min_sequences} or more of the sequences {self.sequences}."
            )
        self.patch = [int(p) for p in patch]
        self.voxel_mm = float(voxel_mm)
        self.slice_2d = slice_2d
        self._rng = np.random.default_rng([int(seed), int(rank)])
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        """Return the number of subjects."""
        return len(self.subjects)

    def volumes(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return the cached ``(image (C,X,Y,Z), present (C,), params (C,3), param_mask (C,3))``."""
        if index not in self._cache:
            subj = self.subjects[index]
            image, avail = load_subject(subj, self.sequences, self.voxel_mm)
            present = avail.astype(np.float32)
            params = np.zeros((len(self.sequences), len(PARAM_NAMES)), dtype=np.float32)
            pmask = np.zeros_like(params)
            for c, q in enumerate(self.sequences):
                if avail[c]:
                    params[c], pmask[c] = normalise_params(subj.params.get(q, {}))
            self._cache[index] = (image, present, params, pmask)
        return self._cache[index]

    def _crop(self, image: np.ndarray) -> np.ndarray:
        size = self.patch if not self.slice_2d else [*self.patch[:2], 1]
        pad = [(0, 0)] + [(max(0, (p - s + 1) // 2), max(0, p - s - (p - s + 1) // 2)) for s, p in
                          zip(image.shape[1:], size, strict=True)]
        if any(a or b for a, b in pad):
            image = np.pad(image, pad)
        fg = np.argwhere(np.abs(image).sum(0) > 0)
        starts = []
        centre = fg[self._rng.integers(len(fg))] if len(fg) and self._rng.random() < 0.9 else None
        for axis, (s, p) in enumerate(zip(image.shape[1:], size, strict=True)):
            if centre is not None:
                lo = int(np.clip(centre[axis] - p // 2, 0, s - p))
            else:
                lo = int(self._rng.integers(0, s - p + 1))
            starts.append(lo)
        crop = image[:, starts[0] : starts[0] + size[0], starts[1] : starts[1] + size[1], starts[2] : starts[2] + size[2]]
        return crop[..., 0] if self.slice_2d else crop

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Return ``image``, ``present``, ``params``, ``param_mask`` and ``index`` tensors."""
        image, present, params, pmask = self.volumes(index)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(self._crop(image))),
            "present": torch.from_numpy(present.copy()),
            "params": torch.from_numpy(params.copy()),
            "param_mask": torch.from_numpy(pmask.copy()),
            "index": torch.tensor(index, dtype=torch.long),
        }
