"""The error every reader raises for a series it refuses."""

from __future__ import annotations

from pydicom import Dataset

from dicom_node.logs import uid_tag

__all__ = ["SeriesReadError", "describe_series"]


def describe_series(ds: Dataset | None, series_uid: str | None = None) -> str:
    """Name a series for messages: number, description and a UID tag (no patient data).

    Parameters
    ----------
    ds : pydicom.Dataset or None
        Any instance of the series.
    series_uid : str, optional
        The SeriesInstanceUID when ``ds`` is not available.

    Returns
    -------
    str
        For example ``"series 3 't1_mprage' (uid:1a2b3c4d5e)"``.
    """
    if ds is None:
        return f"series ? ({uid_tag(series_uid)})"
    number = ds.get("SeriesNumber", None)
    desc = str(ds.get("SeriesDescription", "") or "")
    uid = series_uid or str(ds.get("SeriesInstanceUID", "") or "")
    text = f"series {number if number not in (None, '') else '?'}"
    if desc:
        text += f" {desc!r}"
    return f"{text} ({uid_tag(uid)})"


class SeriesReadError(ValueError):
    """A series that cannot become a volume; the message names the series and why.

    Parameters
    ----------
    ds : pydicom.Dataset or None
        An instance of the series (for its number, description, UID).
    why : str
        The reason, as a sentence fragment without a final full stop.
    series_uid : str, optional
        The SeriesInstanceUID when ``ds`` is ``None``.
    """

    def __init__(self, ds: Dataset | None, why: str, series_uid: str | None = None) -> None:
        self.series = describe_series(ds, series_uid)
        self.why = why
        super().__init__(f"Cannot read {self.series}: {why}.")
