"""The PACS side of harvesting: Orthanc's REST API through ``orthanc-api-client``.

Everything here reads; nothing is written to disk. Headers and files come back as pydicom
datasets in memory, so they can be de-identified before anything is stored
(:mod:`training.harvest.deid`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom import Dataset

__all__ = ["OrthancPacs", "PacsError", "PacsSeries"]


class PacsError(RuntimeError):
    """The PACS could not be read, with a sentence saying what was asked and why it failed."""


@dataclass(frozen=True)
class PacsSeries:
    """One series as the PACS lists it (Orthanc ids; the DICOM UIDs stay in memory only)."""

    orthanc_id: str
    study_id: str
    modality: str
    series_uid: str
    instances: tuple[str, ...]


class OrthancPacs:
    """Read studies, series and instances from Orthanc with :class:`orthanc_api_client.OrthancApiClient`.

    Parameters
    ----------
    url : str
        Orthanc's REST root, for example ``http://127.0.0.1:8042``.
    user, password : str
        HTTP basic authentication (empty: none).
    """

    def __init__(self, url: str, user: str = "", password: str = "") -> None:
        from orthanc_api_client import OrthancApiClient

        self.url = url.rstrip("/")
        self.api = OrthancApiClient(self.url, user=user or None, pwd=password or None)
        self.api._http_session.trust_env = False  # loopback PACS: never through an environment proxy

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        from orthanc_api_client import OrthancApiException

        try:
            return fn(*args)
        except OrthancApiException as exc:
            raise PacsError(f"the PACS at {self.url} failed to {what}: {exc.msg}") from None

    def check(self) -> None:
        """Raise :class:`PacsError` when the PACS does not answer."""
        if not self.api.is_alive(timeout=5):
            raise PacsError(f"the PACS at {self.url} does not answer (GET /system).")

    def studies(self) -> list[str]:
        """Orthanc ids of every study."""
        ids: list[str] = self._call("list its studies", self.api.studies.get_all_ids)
        return ids

    def series(self, study_id: str) -> list[PacsSeries]:
        """The series of one study."""
        rows = self._call("list the series of a study", self.api.get_json, f"studies/{study_id}/series")
        return [PacsSeries(r["ID"], study_id, str(r["MainDicomTags"].get("Modality", "")),
                           str(r["MainDicomTags"].get("SeriesInstanceUID", "")), tuple(r.get("Instances", [])))
                for r in rows]

    def seg_series(self) -> list[PacsSeries]:
        """Every SEG series in the PACS, found by one ``/tools/find`` (no study is listed one by one)."""
        return self._find_series("SEG")

    def _find_series(self, modality: str) -> list[PacsSeries]:
        query = {"Level": "Series", "Query": {"Modality": modality}, "Expand": True}
        response = self._call(f"find its {modality} series", lambda: self.api.post("tools/find", json=query))
        return [PacsSeries(r["ID"], str(r.get("ParentStudy", "")), modality,
                           str(r["MainDicomTags"].get("SeriesInstanceUID", "")), tuple(r.get("Instances", [])))
                for r in response.json()]

    def dataset(self, instance_id: str, *, headers_only: bool = False) -> Dataset:
        """One instance read into memory."""
        raw: bytes = self._call("download an instance", self.api.instances.get_file, instance_id)
        return pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=headers_only)

    def series_datasets(self, series: PacsSeries) -> Iterator[Dataset]:
        """Every instance of a series, read into memory one by one."""
        for instance_id in series.instances:
            yield self.dataset(instance_id)
