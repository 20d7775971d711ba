"""NIfTI export of volumes with a JSON sidecar of acquisition parameters."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dicom_node.io.volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    import nibabel as nib

__all__ = ["nifti_stem", "sidecar", "volume_to_nifti", "write_nifti_with_sidecar"]


def volume_to_nifti(vol: Volume) -> nib.Nifti1Image:
    """Make a NIfTI-1 image of a volume (sform and qform = scanner, units mm).

    Integer-valued data that fit int16 are stored as int16, everything else as float32.

    Parameters
    ----------
    vol : Volume
        The volume; its ``affine`` (RAS+) becomes the sform and qform.

    Returns
    -------
    nibabel.Nifti1Image
    """
    import nibabel as nib

    data = vol.data
    if data.size and np.all(np.isfinite(data)) and np.array_equal(data, np.round(data)):
        lo, hi = float(data.min()), float(data.max())
        if lo >= -32768 and hi <= 32767:
            data = data.astype(np.int16)
    img = nib.Nifti1Image(np.asarray(data), vol.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(vol.affine, code=1)
    img.set_qform(vol.affine, code=1)
    desc = (vol.meta.get("series_description") or "")[:79]
    img.header["descrip"] = desc.encode("ascii", "replace")
    return img


def _seconds(ms: Any) -> float | None:
    return None if ms is None else round(float(ms) / 1000.0, 6)


def sidecar(vol: Volume) -> dict[str, Any]:
    """The JSON sidecar of a volume (BIDS key names; times in seconds as in BIDS).

    Parameters
    ----------
    vol : Volume

    Returns
    -------
    dict
        ``RepetitionTime``, ``EchoTime``, ``InversionTime`` (s), ``FlipAngle`` (deg),
        ``DiffusionBValue`` (and ``DiffusionGradientOrientation``), ``Manufacturer``,
        ``ManufacturersModelName``, ``MagneticFieldStrength`` (T), ``SequenceName``,
        ``SeriesDescription``, ``SeriesNumber``, ``Modality``, ``ImageType``,
        ``SeriesInstanceUID``, ``Split``; keys with no value are left out.
    """
    m = vol.meta
    out: dict[str, Any] = {
        "Modality": m.get("modality"),
        "Manufacturer": m.get("manufacturer"),
        "ManufacturersModelName": m.get("model"),
        "MagneticFieldStrength": m.get("field_strength"),
        "SeriesDescription": m.get("series_description"),
        "SeriesNumber": m.get("series_number"),
        "SequenceName": m.get("sequence_name"),
        "ImageType": m.get("image_type"),
        "RepetitionTime": _seconds(m.get("tr")),
        "EchoTime": _seconds(m.get("te")),
        "InversionTime": _seconds(m.get("ti")),
        "FlipAngle": m.get("flip_angle"),
        "DiffusionBValue": m.get("b_value"),
        "DiffusionGradientOrientation": m.get("b_vector"),
        "SeriesInstanceUID": vol.series_uid,
        "Split": vol.split,
        "ConversionSoftware": "mrinode",
    }
    return {k: v for k, v in out.items() if v is not None}


def nifti_stem(vol: Volume) -> str:
    """A file name stem: ``<series number>_<description>[_<split>]`` (safe characters)."""
    number = vol.meta.get("series_number")
    desc = vol.meta.get("series_description") or "series"
    stem = f"{int(number):03d}_{desc}" if number is not None else str(desc)
    if vol.split:
        stem += f"_{vol.split}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_") or "series"


def write_nifti_with_sidecar(vol: Volume, out_dir: str | Path, stem: str | None = None,
                             extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.nii.gz`` and ``<stem>.json``.

    Parameters
    ----------
    vol : Volume
    out_dir : str or Path
        Created if missing.
    stem : str, optional
        File name stem; :func:`nifti_stem` when omitted.
    extra : dict, optional
        More sidecar keys (for example the identified ``SequenceLabel``).

    Returns
    -------
    (Path, Path)
        The NIfTI file and the JSON sidecar.
    """
    import nibabel as nib

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or nifti_stem(vol)
    nii_path, json_path = out / f"{stem}.nii.gz", out / f"{stem}.json"
    nib.save(volume_to_nifti(vol), nii_path)
    json_path.write_text(json.dumps({**sidecar(vol), **(extra or {})}, indent=2) + "\n", encoding="utf-8")
    return nii_path, json_path
