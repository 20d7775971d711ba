"""The one sequence vocabulary used everywhere in mrinode."""

from __future__ import annotations

import difflib
from enum import StrEnum

__all__ = ["SequenceLabel", "parse_sequence_label"]


class SequenceLabel(StrEnum):
    """MRI sequence labels.

    ``UNKNOWN`` means "not confident", never a guess; ``OTHER`` means a recognised
    series that belongs to no other label.
    """

    T1 = "T1"
    T1C = "T1C"  # post-contrast T1
    T2 = "T2"
    FLAIR = "FLAIR"
    PD = "PD"
    DWI = "DWI"
    ADC = "ADC"
    SWI = "SWI"  # includes T2*-weighted GRE
    LOCALIZER = "LOCALIZER"
    OTHER = "OTHER"
    UNKNOWN = "UNKNOWN"


def parse_sequence_label(value: str) -> SequenceLabel:
    """Parse a label name, case-insensitively, with a did-you-mean error.

    Parameters
    ----------
    value : str
        A label such as ``"flair"`` or ``"T1C"``.

    Returns
    -------
    SequenceLabel
        The matching label.

    Raises
    ------
    ValueError
        If ``value`` is not a label; the message suggests the closest one.
    """
    key = value.strip().upper()
    try:
        return SequenceLabel(key)
    except ValueError:
        names = [m.value for m in SequenceLabel]
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{value!r} is not a sequence label; expected one of {', '.join(names)}.{hint}"
        ) from None
