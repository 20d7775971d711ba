"""URLs of the viewer."""

from __future__ import annotations

from urllib.parse import urlencode

__all__ = ["DEFAULT_PORT", "study_url"]

#: The viewer's port when none is given (Orthanc's HTTP port is 8042).
DEFAULT_PORT = 8043


def study_url(base: str, study_uid: str, *, mode: str = "viewer") -> str:
    """The viewer URL that opens one study.

    Parameters
    ----------
    base : str
        The viewer's origin, e.g. ``http://127.0.0.1:8043``.
    study_uid : str
        The Study Instance UID.
    mode : str
        OHIF mode route (``viewer`` is the basic viewer; ``segmentation`` the
        segmentation mode).

    Returns
    -------
    str
    """
    return f"{base.rstrip('/')}/{mode}?{urlencode({'StudyInstanceUIDs': study_uid})}"
