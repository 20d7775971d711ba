"""Label-map rules after the decision: connected components kept or dropped.

Both rules work on 26-connected components of the foreground (every tumour label together),
on the reference grid, after :func:`models.engine.decide_labels`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.bundle import BundleError

__all__ = ["PEAK_SCOPES", "component_peak", "drop_small_components", "drop_unconfident_components", "min_component_peak",
           "min_component_peak_scope"]

#: What one component's peak decides for (card ``preprocessing.min_component_peak_scope``).
PEAK_SCOPES = ("component", "study")


def _components(labels: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    comp, n = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), dtype=bool))
    return comp, int(n)


def drop_small_components(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Remove connected components of the foreground smaller than ``fraction`` of the largest.

    Parameters
    ----------
    labels : numpy.ndarray
        Label map (0 background).
    fraction : float
        0 keeps everything; 0.2 drops every (26-connected) foreground component under 20 %
        of the largest one's voxel count.

    Returns
    -------
    numpy.ndarray
        The label map with small components set to 0.
    """
    if fraction <= 0 or not labels.any():
        return labels
    comp, n = _components(labels)
    if n <= 1:
        return labels
    sizes = np.bincount(comp.ravel())[1:]
    keep = np.flatnonzero(sizes >= fraction * sizes.max()) + 1
    out = labels.copy()
    out[~np.isin(comp, keep)] = 0
    return out


def drop_unconfident_components(labels: np.ndarray, foreground_prob: np.ndarray, min_peak: float,
                                scope: str = "component") -> np.ndarray:
    """Remove foreground that the network is nowhere sure of: a hysteresis rule on component peaks.

    A voxel is reported where the decision says so, but only where the network is sure of the
    tumour *somewhere* (a component's peak probability at or over ``min_peak``). With
    ``scope="component"`` each connected component is judged alone: a lukewarm patch of bright
    cortex is dropped whole, a tumour keeps its unsure rim since its core is sure — and a small
    unsure satellite of a sure tumour is dropped too. With ``scope="study"`` the label map is kept
    whole when any component is sure and emptied when none is: a head where the network is sure
    of nothing gets no tumour, and a study with a sure tumour is left as decided.

    Parameters
    ----------
    labels : numpy.ndarray
        Label map (0 background).
    foreground_prob : numpy.ndarray
        The probability of any foreground label (1 − background), same shape as ``labels``.
    min_peak : float
        0 keeps everything.
    scope : {"component", "study"}
        What one peak decides for.

    Returns
    -------
    numpy.ndarray
        The label map with unconfident components set to 0.
    """
    if labels.shape != foreground_prob.shape:
        raise ValueError(f"labels {labels.shape} and probabilities {foreground_prob.shape} differ in shape.")
    if scope not in PEAK_SCOPES:
        raise ValueError(f"peak rule scope {scope!r} is not one of {', '.join(PEAK_SCOPES)}.")
    if min_peak <= 0 or not labels.any():
        return labels
    # compared in the probabilities' own precision: a peak of float32 0.9 is 'at' a rule of 0.9
    rule = float(np.asarray(min_peak, dtype=foreground_prob.dtype))
    if scope == "study":
        return labels if float(foreground_prob[labels > 0].max()) >= rule else np.zeros_like(labels)
    comp, n = _components(labels)
    peaks = component_peak(comp, n, foreground_prob)
    drop = np.concatenate([[False], peaks < rule])
    if not drop.any():
        return labels
    out = labels.copy()
    out[drop[comp]] = 0
    return out


def component_peak(comp: np.ndarray, n: int, prob: np.ndarray) -> np.ndarray:
    """The highest ``prob`` in each of components ``1..n`` of ``comp`` (a ``(n,)`` array)."""
    from scipy import ndimage

    inside = comp > 0  # only the components' voxels: a few mL of a whole head
    return np.asarray(ndimage.maximum(prob[inside], comp[inside], index=np.arange(1, n + 1)),
                      dtype=np.float64).reshape(n)


def min_component_peak(name: str, value: Any) -> float:
    """Check a card's ``preprocessing.min_component_peak``: a probability from 0 (keep all) to below 1.

    Raises
    ------
    BundleError
        With a sentence naming the bundle and the key.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise BundleError(f"bundle {name!r}: card preprocessing.min_component_peak {value!r} is not a probability "
                          "from 0 (keep every component) to below 1.")
    return float(value)


def min_component_peak_scope(name: str, value: Any) -> str:
    """Check a card's ``preprocessing.min_component_peak_scope``: one of :data:`PEAK_SCOPES`.

    Raises
    ------
    BundleError
        With a sentence naming the bundle and the key.
    """
    if value not in PEAK_SCOPES:
        raise BundleError(f"bundle {name!r}: card preprocessing.min_component_peak_scope {value!r} is not one of "
                          f"{', '.join(PEAK_SCOPES)}.")
    return str(value)
