"""MR signal equations, evaluated per tissue (vectors indexed by tissue).

An image is then the partial-volume mixture ``sum_t fraction_t * signal_t``; each
function here returns the per-tissue signal (arbitrary units, PD = 1 for CSF).

- Spin echo / turbo spin echo: ``PD (1 - exp(-TR/T1)) exp(-TE/T2)``.
- Inversion recovery (FLAIR, magnitude): ``PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``;
  :func:`flair_null_ti` gives the TI that nulls a tissue.
- Spoiled gradient echo (FLASH, SWI-like T2*): ``PD sin(a)(1-E1)/(1-cos(a)E1) exp(-TE/T2*)``.
- MPRAGE: inversion, a train of low-angle readouts and recovery, iterated to the steady
  state (Bloch recursion on the longitudinal magnetisation; signal at the centre of k-space).
- Diffusion: spin-echo EPI signal times ``exp(-b ADC)``, fat suppressed.
- Post-contrast: ``R1 = 1/T1 + r1 [Gd]``, ``R2 = 1/T2 + r2 [Gd]`` (fast exchange).
"""

from __future__ import annotations

import numpy as np

from training.synth.tissue import GD_RELAXIVITY, Tissue, TissueParameters

__all__ = [
    "diffusion",
    "flair_null_ti",
    "inversion_recovery",
    "mprage",
    "spin_echo",
    "spoiled_gre",
    "with_gadolinium",
]


def spin_echo(p: TissueParameters, tr: float, te: float) -> np.ndarray:
    """Spin-echo / turbo-spin-echo magnitude per tissue.

    Parameters
    ----------
    p : TissueParameters
        Tissue parameters.
    tr, te : float
        Repetition and (effective) echo time in ms.

    Returns
    -------
    numpy.ndarray
        Signal per tissue.
    """
    return p.pd * (1.0 - np.exp(-tr / p.t1)) * np.exp(-te / p.t2)


def inversion_recovery(p: TissueParameters, tr: float, te: float, ti: float) -> np.ndarray:
    """Magnitude inversion-recovery spin-echo (FLAIR, STIR) signal per tissue.

    Parameters
    ----------
    p : TissueParameters
        Tissue parameters.
    tr, te, ti : float
        Repetition, echo and inversion time in ms.

    Returns
    -------
    numpy.ndarray
        Signal per tissue (magnitude reconstruction).
    """
    mz = 1.0 - 2.0 * np.exp(-ti / p.t1) + np.exp(-tr / p.t1)
    return p.pd * np.abs(mz) * np.exp(-te / p.t2)


def flair_null_ti(t1: float, tr: float) -> float:
    """Inversion time (ms) that nulls a tissue of longitudinal relaxation ``t1``.

    Parameters
    ----------
    t1 : float
        T1 of the tissue to null (CSF for FLAIR), ms.
    tr : float
        Repetition time, ms.

    Returns
    -------
    float
        ``T1 ln(2 / (1 + exp(-TR/T1)))``.
    """
    return float(t1 * np.log(2.0 / (1.0 + np.exp(-tr / t1))))


def spoiled_gre(p: TissueParameters, tr: float, te: float, flip_deg: float) -> np.ndarray:
    """Spoiled gradient-echo (FLASH / SPGR) steady-state signal per tissue (T2* decay).

    Parameters
    ----------
    p : TissueParameters
        Tissue parameters.
    tr, te : float
        Repetition and echo time in ms.
    flip_deg : float
        Flip angle in degrees.

    Returns
    -------
    numpy.ndarray
        Signal per tissue.
    """
    a = np.deg2rad(flip_deg)
    e1 = np.exp(-tr / p.t1)
    return p.pd * np.sin(a) * (1.0 - e1) / (1.0 - np.cos(a) * e1) * np.exp(-te / p.t2s)


def mprage(
    p: TissueParameters,
    tr: float,
    te: float,
    ti: float,
    flip_deg: float,
    echo_spacing: float = 7.0,
    n_readout: int = 160,
    inversion_efficiency: float = 0.96,
    n_cycles: int = 8,
) -> np.ndarray:
    """MPRAGE signal per tissue by Bloch recursion to the steady state.

    Parameters
    ----------
    p : TissueParameters
        Tissue parameters.
    tr : float
        Time between inversions (the MPRAGE "TR"), ms.
    te : float
        Echo time of each readout, ms.
    ti : float
        Inversion time to the centre of k-space (linear ordering), ms.
    flip_deg : float
        Readout flip angle in degrees.
    echo_spacing : float
        Time between readout pulses, ms.
    n_readout : int
        Readout pulses per inversion.
    inversion_efficiency : float
        Fraction of the magnetisation inverted (1 = perfect).
    n_cycles : int
        Inversion cycles simulated (the steady state is reached after a few).

    Returns
    -------
    numpy.ndarray
        Signal per tissue (magnitude).
    """
    a = np.deg2rad(flip_deg)
    t_before = max(ti - (n_readout / 2.0) * echo_spacing, 1.0)
    t_after = max(tr - ti - (n_readout / 2.0) * echo_spacing, 1.0)
    mz = np.ones_like(p.t1)
    signal = np.zeros_like(p.t1)
    e_es = np.exp(-echo_spacing / p.t1)
    for _ in range(n_cycles):
        mz = -inversion_efficiency * mz
        mz = 1.0 - (1.0 - mz) * np.exp(-t_before / p.t1)
        for n in range(n_readout):
            if n == n_readout // 2:
                signal = mz * np.sin(a)
            mz = mz * np.cos(a)
            mz = 1.0 - (1.0 - mz) * e_es
        mz = 1.0 - (1.0 - mz) * np.exp(-t_after / p.t1)
    return p.pd * np.abs(signal) * np.exp(-te / p.t2s)


def diffusion(
    p: TissueParameters, tr: float, te: float, b_value: float, fat_suppression: float = 0.05
) -> np.ndarray:
    """Spin-echo EPI diffusion-weighted (trace) signal per tissue.

    Parameters
    ----------
    p : TissueParameters
        Tissue parameters (ADC in 1e-6 mm^2/s).
    tr, te : float
        Repetition and echo time in ms.
    b_value : float
        s/mm^2.
    fat_suppression : float
        Remaining fraction of the fat signal.

    Returns
    -------
    numpy.ndarray
        Signal per tissue.
    """
    s = spin_echo(p, tr, te) * np.exp(-b_value * p.adc * 1e-6)
    s = s.copy()
    s[Tissue.FAT] *= fat_suppression
    return s


def with_gadolinium(p: TissueParameters, concentration_mM: np.ndarray) -> TissueParameters:
    """Tissue parameters after gadolinium: shortened T1 and T2 where the agent is.

    Parameters
    ----------
    p : TissueParameters
        Pre-contrast parameters.
    concentration_mM : numpy.ndarray
        Gadolinium concentration per tissue (mM).

    Returns
    -------
    TissueParameters
        Post-contrast parameters (``R = R0 + r [Gd]``).
    """
    r1, r2 = GD_RELAXIVITY[p.field_strength]
    t1 = 1000.0 / (1000.0 / p.t1 + r1 * concentration_mM)
    t2 = 1000.0 / (1000.0 / p.t2 + r2 * concentration_mM)
    t2s = 1000.0 / (1000.0 / p.t2s + r2 * concentration_mM)
    return TissueParameters(t1=t1, t2=t2, t2s=t2s, pd=p.pd, adc=p.adc, field_strength=p.field_strength)
