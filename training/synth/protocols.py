"""Acquisition protocols: TR/TE/TI/flip, geometry and SNR drawn per sequence and vendor.

Ranges follow common clinical brain-tumour protocols (e.g. the consensus brain tumour
imaging protocol, Ellingson BM et al., Neuro-Oncology 2015;17:1188-1198) with the
differences between 1.5 T and 3 T that vendors' default protocols show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dicom_node.sequences import SequenceLabel
from training.synth.physics import flair_null_ti

__all__ = ["KINDS", "Protocol", "draw_protocol"]

#: Signal model per protocol kind.
KINDS: tuple[str, ...] = ("se", "tse", "ir", "mprage", "gre", "dwi", "adc", "localizer")


@dataclass(frozen=True)
class Protocol:
    """One series' acquisition parameters (times in ms, lengths in mm).

    ``plane`` is ``"axial"``, ``"sagittal"`` or ``"coronal"``; for the 3-plane localizer
    it is ``"3plane"``. ``b_values`` is non-empty only for diffusion.
    """

    sequence: str
    kind: str
    tr: float
    te: float
    ti: float | None
    flip_deg: float
    echo_train_length: int
    b_values: tuple[float, ...]
    acquisition: str  # "2D" or "3D"
    plane: str
    pixel_mm: float
    matrix: int
    slice_thickness_mm: float
    slice_spacing_mm: float
    n_slices: int
    snr: float
    contrast: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready parameters."""
        return asdict(self)


def _u(rng: np.random.Generator, lo: float, hi: float, nd: int = 1) -> float:
    return round(float(rng.uniform(lo, hi)), nd)


def _geometry_2d(rng: np.random.Generator, plane: str, thick: tuple[float, float], matrices: tuple[int, ...], coverage: float = 150.0) -> dict[str, Any]:
    fov = _u(rng, 220.0, 240.0, 0)
    matrix = int(rng.choice(matrices))
    thickness = _u(rng, *thick)
    gap = float(rng.choice([0.0, 0.1, 0.2, 0.3]))
    spacing = round(thickness * (1.0 + gap), 2)
    return {
        "acquisition": "2D",
        "plane": plane,
        "pixel_mm": round(fov / matrix, 4),
        "matrix": matrix,
        "slice_thickness_mm": thickness,
        "slice_spacing_mm": spacing,
        "n_slices": int(np.ceil(coverage / spacing)),
    }


def _geometry_3d(plane: str, voxel: float, matrix: int, n_slices: int, thickness: float | None = None) -> dict[str, Any]:
    t = voxel if thickness is None else thickness
    return {
        "acquisition": "3D",
        "plane": plane,
        "pixel_mm": voxel,
        "matrix": matrix,
        "slice_thickness_mm": t,
        "slice_spacing_mm": t,
        "n_slices": n_slices,
    }


def draw_protocol(
    rng: np.random.Generator,
    sequence: SequenceLabel,
    *,
    vendor: str,
    field_strength: float,
    t1_kind: str = "se",
    csf_t1_ms: float = 4300.0,
) -> Protocol:
    """Draw a realistic protocol for one sequence.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    sequence : SequenceLabel
        Which series.
    vendor : str
        ``"siemens"``, ``"ge"`` or ``"philips"`` (3D T1 planes differ by vendor).
    field_strength : float
        1.5 or 3.0.
    t1_kind : str
        ``"se"`` (2D spin echo) or ``"mprage"`` (3D IR gradient echo) for T1 and T1C.
    csf_t1_ms : float
        T1 of CSF, used to place the FLAIR inversion at the CSF null.

    Returns
    -------
    Protocol
        The drawn parameters.

    Raises
    ------
    ValueError
        For a label that is not synthesised (OTHER, UNKNOWN).
    """
    hi = field_strength >= 2.0
    s = SequenceLabel(sequence)
    if s in (SequenceLabel.T1, SequenceLabel.T1C):
        if t1_kind == "mprage":
            plane = "axial" if vendor == "ge" else "sagittal"
            ti = _u(rng, 880, 1000, 0) if hi else _u(rng, 1000, 1150, 0)
            geo = _geometry_3d(plane, 1.0, 256, 176)
            return Protocol(s.value, "mprage", _u(rng, 1900, 2300, 0), _u(rng, 2.2, 3.4, 2), ti, _u(rng, 8, 10, 0), 1, (),
                            snr=_u(rng, 25, 45), contrast=s is SequenceLabel.T1C, **geo)
        geo = _geometry_2d(rng, "axial", (4.0, 5.0), (256, 320, 384))
        return Protocol(s.value, "se", _u(rng, 400, 650, 0), _u(rng, 8, 15, 1), None, 90.0 if not hi else _u(rng, 70, 90, 0), int(rng.choice([1, 2, 3])), (),
                        snr=_u(rng, 20, 40), contrast=s is SequenceLabel.T1C, **geo)
    if s is SequenceLabel.T2:
        plane = "axial" if rng.random() < 0.8 else "coronal"
        geo = _geometry_2d(rng, plane, (3.0, 5.0), (320, 384, 448, 512))
        return Protocol(s.value, "tse", _u(rng, 3500, 6500, 0), _u(rng, 80, 110, 0), None, _u(rng, 120, 150, 0), int(rng.choice([12, 15, 18, 24])), (),
                        snr=_u(rng, 25, 45), **geo)
    if s is SequenceLabel.PD:
        geo = _geometry_2d(rng, "axial", (3.0, 5.0), (256, 320, 384))
        return Protocol(s.value, "tse", _u(rng, 2500, 4000, 0), _u(rng, 10, 25, 0), None, _u(rng, 120, 150, 0), int(rng.choice([5, 7, 9])), (),
                        snr=_u(rng, 30, 50), **geo)
    if s is SequenceLabel.FLAIR:
        plane = "axial" if rng.random() < 0.85 else "coronal"
        tr = _u(rng, 8000, 11000, 0)
        ti = round(flair_null_ti(csf_t1_ms, tr) * float(rng.uniform(0.98, 1.02)), 0)
        geo = _geometry_2d(rng, plane, (3.0, 5.0), (256, 320, 384))
        return Protocol(s.value, "ir", tr, _u(rng, 80, 130, 0), ti, _u(rng, 120, 160, 0), int(rng.choice([16, 20, 24])), (),
                        snr=_u(rng, 15, 30), **geo)
    if s in (SequenceLabel.DWI, SequenceLabel.ADC):
        geo = _geometry_2d(rng, "axial", (4.0, 5.0), (128, 160, 192))
        kind = "dwi" if s is SequenceLabel.DWI else "adc"
        return Protocol(s.value, kind, _u(rng, 4000, 8000, 0), _u(rng, 60, 95, 0), None, 90.0, int(geo["matrix"] // 2), (0.0, 1000.0),
                        snr=_u(rng, 20, 35), **geo)
    if s is SequenceLabel.SWI:
        te = _u(rng, 18, 25, 1) if hi else _u(rng, 35, 45, 1)
        geo = _geometry_3d("axial", round(230.0 / 256.0, 4), 256, 72, thickness=float(rng.choice([1.5, 2.0])))
        return Protocol(s.value, "gre", _u(rng, 27, 49, 0), te, None, _u(rng, 12, 20, 0), 1, (), snr=_u(rng, 15, 30), **geo)
    if s is SequenceLabel.LOCALIZER:
        return Protocol(s.value, "localizer", _u(rng, 7, 9, 1), _u(rng, 3, 5, 2), None, 20.0, 1, (), acquisition="2D", plane="3plane",
                        pixel_mm=round(250.0 / 256.0, 4), matrix=256, slice_thickness_mm=8.0, slice_spacing_mm=30.0, n_slices=3,
                        snr=_u(rng, 10, 20))
    raise ValueError(f"Sequence {s.value!r} cannot be synthesised; choose from T1, T1C, T2, FLAIR, PD, DWI, ADC, SWI, LOCALIZER.")
