"""Per-tissue MR parameters (T1, T2, T2*, proton density, ADC) at 1.5 T and 3 T.

Values are rounded literature figures for adult brain and head tissues at body
temperature; every subject jitters them a little (:func:`tissue_parameters`).

Sources
-------
- Normal brain T1 and T2 at 3 T: Wansapura JP, Holland SK, Dunn RS, Ball WS. NMR
  relaxation times in the human brain at 3.0 tesla. J Magn Reson Imaging 1999;9:531-538
  (WM T1 832 ms, T2 80 ms; GM T1 1331 ms, T2 110 ms).
- T1 across field strengths (1.5 T WM ~650 ms, GM ~1200 ms, CSF ~4.3 s): Rooney WD et al.
  Magnetic field and tissue dependencies of human brain longitudinal 1H2O relaxation in
  vivo. Magn Reson Med 2007;57:308-318.
- T2 at 1.5 T vs 3 T: Stanisz GJ et al. T1, T2 relaxation and magnetization transfer in
  tissue at 3T. Magn Reson Med 2005;54:507-512.
- T2* at 3 T (WM ~53 ms, cortical GM ~66 ms): Peters AM et al. T2* measurements in human
  brain at 1.5, 3 and 7 T. Magn Reson Imaging 2007;25:748-753.
- Fat and muscle T1/T2 at 1.5 T and 3 T (fat 343/382 ms, 58/68 ms; muscle 1008/1420 ms,
  44/32 ms): Gold GE et al. Musculoskeletal MRI at 3.0 T: relaxation times and image
  contrast. AJR 2004;183:343-351.
- Normal ADC (WM ~0.70, GM ~0.85, CSF ~3.0 x 10^-3 mm^2/s): Helenius J et al. Diffusion-
  weighted MR imaging in normal human brains in various age groups. AJNR 2002;23:194-199.
- Glioma compartments (oedema and necrosis with long T2 and high ADC, enhancing tumour
  intermediate): Oh J et al. Quantitative apparent diffusion coefficients and T2
  relaxation times in characterizing contrast enhancing brain tumors and regions of
  peritumoral edema. J Magn Reson Imaging 2005;21:701-708 (values rounded).
- Venous blood: T1 ~1.65 s at 3 T (Lu H et al. Determining the longitudinal relaxation
  time (T1) of blood at 3.0 Tesla. Magn Reson Med 2004;52:679-682); T2 ~55 ms and short
  T2* at venous oxygenation (Zhao JM et al. Oxygenation and hematocrit dependence of
  transverse relaxation rates of blood at 3T. Magn Reson Med 2007;58:592-597).
- Gadobutrol relaxivity in plasma, r1 5.2/5.0 and r2 6.1/7.1 s^-1 mM^-1 at 1.5/3 T:
  Rohrer M et al. Comparison of magnetic properties of MRI contrast media solutions at
  different magnetic field strengths. Invest Radiol 2005;40:715-724.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = [
    "GD_RELAXIVITY",
    "Tissue",
    "TissueParameters",
    "gd_concentration_mm",
    "tissue_parameters",
]


class Tissue(IntEnum):
    """Tissue classes of the synthetic head; the value is the hard-label code."""

    AIR = 0
    CSF = 1
    GM = 2
    WM = 3
    FAT = 4
    MUSCLE = 5  # skin, muscle and other soft tissue outside the skull
    BONE = 6
    NECROSIS = 7  # BraTS label 1 (necrotic / non-enhancing core)
    OEDEMA = 8  # BraTS label 2
    ENHANCING = 9  # BraTS label 3
    BLOOD = 10  # venous blood in the dural sinuses (flow void on spin echo, enhances with Gd)


#: (T1 ms, T2 ms, T2* ms, PD, ADC 1e-6 mm^2/s) per tissue at 1.5 T.
_TABLE_15: dict[Tissue, tuple[float, float, float, float, float]] = {
    Tissue.AIR: (1000.0, 1.0, 1.0, 0.0, 0.0),
    Tissue.CSF: (4300.0, 2000.0, 1200.0, 1.00, 3000.0),
    Tissue.GM: (1200.0, 95.0, 84.0, 0.80, 850.0),
    Tissue.WM: (650.0, 72.0, 66.0, 0.69, 700.0),
    Tissue.FAT: (343.0, 58.0, 40.0, 0.90, 20.0),
    Tissue.MUSCLE: (1008.0, 44.0, 30.0, 0.72, 1450.0),
    Tissue.BONE: (250.0, 1.0, 1.0, 0.05, 0.0),
    Tissue.NECROSIS: (1800.0, 300.0, 160.0, 0.90, 2100.0),
    Tissue.OEDEMA: (1100.0, 190.0, 110.0, 0.86, 1500.0),
    Tissue.ENHANCING: (1050.0, 125.0, 80.0, 0.82, 1000.0),
    Tissue.BLOOD: (1440.0, 110.0, 40.0, 0.85, 1500.0),
}

#: (T1 ms, T2 ms, T2* ms, PD, ADC 1e-6 mm^2/s) per tissue at 3 T.
_TABLE_30: dict[Tissue, tuple[float, float, float, float, float]] = {
    Tissue.AIR: (1000.0, 1.0, 1.0, 0.0, 0.0),
    Tissue.CSF: (4300.0, 1800.0, 1000.0, 1.00, 3000.0),
    Tissue.GM: (1331.0, 99.0, 66.0, 0.80, 850.0),
    Tissue.WM: (832.0, 69.0, 53.0, 0.69, 700.0),
    Tissue.FAT: (382.0, 68.0, 30.0, 0.90, 20.0),
    Tissue.MUSCLE: (1420.0, 32.0, 22.0, 0.72, 1450.0),
    Tissue.BONE: (300.0, 1.0, 1.0, 0.05, 0.0),
    Tissue.NECROSIS: (2300.0, 280.0, 130.0, 0.90, 2100.0),
    Tissue.OEDEMA: (1500.0, 180.0, 90.0, 0.86, 1500.0),
    Tissue.ENHANCING: (1450.0, 120.0, 62.0, 0.82, 1000.0),
    Tissue.BLOOD: (1650.0, 55.0, 25.0, 0.85, 1500.0),
}

#: Gadobutrol relaxivities (r1, r2) in s^-1 mM^-1 by field strength (Rohrer 2005).
GD_RELAXIVITY: dict[float, tuple[float, float]] = {1.5: (5.2, 6.1), 3.0: (5.0, 7.1)}

#: Typical tissue gadolinium concentration (mM) a few minutes after 0.1 mmol/kg; the
#: blood-brain barrier keeps it out of normal brain, CSF and (here) oedema.
_GD_MM: dict[Tissue, float] = {
    Tissue.MUSCLE: 0.15,
    Tissue.NECROSIS: 0.02,
    Tissue.ENHANCING: 0.45,
    Tissue.BLOOD: 0.6,
}


@dataclass(frozen=True)
class TissueParameters:
    """Relaxation and diffusion parameters, one entry per :class:`Tissue` (by value).

    Attributes
    ----------
    t1, t2, t2s : numpy.ndarray
        Relaxation times in ms.
    pd : numpy.ndarray
        Relative proton density (CSF = 1).
    adc : numpy.ndarray
        Apparent diffusion coefficient in 1e-6 mm^2/s.
    field_strength : float
        1.5 or 3.0 (tesla).
    """

    t1: np.ndarray
    t2: np.ndarray
    t2s: np.ndarray
    pd: np.ndarray
    adc: np.ndarray
    field_strength: float

    def as_dict(self) -> dict[str, dict[str, float]]:
        """Return ``{tissue name: {"t1": ..., ...}}`` for the parameter JSON."""
        return {
            t.name: {
                "t1_ms": round(float(self.t1[t]), 2),
                "t2_ms": round(float(self.t2[t]), 2),
                "t2s_ms": round(float(self.t2s[t]), 2),
                "pd": round(float(self.pd[t]), 4),
                "adc_1e-6mm2_s": round(float(self.adc[t]), 1),
            }
            for t in Tissue
        }


def _nearest_field(field_strength: float) -> float:
    if field_strength <= 0:
        raise ValueError(f"field_strength must be positive (1.5 or 3.0 tesla); got {field_strength}.")
    return 1.5 if abs(field_strength - 1.5) < abs(field_strength - 3.0) else 3.0


def tissue_parameters(
    field_strength: float, rng: np.random.Generator | None = None, jitter: float = 0.05
) -> TissueParameters:
    """Return per-tissue parameters at a field strength, optionally jittered per subject.

    Parameters
    ----------
    field_strength : float
        Tesla; the nearer of the 1.5 T and 3 T tables is used.
    rng : numpy.random.Generator, optional
        When given, each value is multiplied by ``1 + jitter * N(0, 1)`` (clipped to
        +-2.5 sigma) so that subjects differ a little.
    jitter : float
        Relative standard deviation of the per-subject variation.

    Returns
    -------
    TissueParameters
        Arrays indexed by :class:`Tissue` value.
    """
    b0 = _nearest_field(field_strength)
    table = _TABLE_15 if b0 == 1.5 else _TABLE_30
    arr = np.array([table[t] for t in Tissue], dtype=np.float64)  # (n_tissue, 5)
    if rng is not None and jitter > 0:
        arr *= 1.0 + jitter * np.clip(rng.standard_normal(arr.shape), -2.5, 2.5)
    return TissueParameters(
        t1=arr[:, 0], t2=arr[:, 1], t2s=arr[:, 2], pd=arr[:, 3], adc=arr[:, 4], field_strength=b0
    )


def gd_concentration_mm(scale: float = 1.0) -> np.ndarray:
    """Tissue gadolinium concentration per :class:`Tissue` (mM), scaled per subject.

    Parameters
    ----------
    scale : float
        Multiplier (dose and timing vary between examinations).

    Returns
    -------
    numpy.ndarray
        One concentration per tissue value; zero where the barrier is intact.
    """
    out = np.zeros(len(Tissue), dtype=np.float64)
    for t, c in _GD_MM.items():
        out[t] = c * scale
    return out
