"""Which SEGs in the PACS are radiologists' corrections of the node's own results.

A correction is a SEG that (a) was not made by the node (its Manufacturer is not one of the
node's), (b) references a source series that also has a SEG made by the node, and (c) is
newer than the node's SEG for that series (Content Date and Time, else Series Date and
Time). Per source series the newest correction wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset

from training.harvest.pacs import OrthancPacs, PacsSeries

__all__ = ["Correction", "find_corrections", "referenced_series", "seg_time"]


@dataclass
class Correction:
    """A corrected SEG, the node's SEG it corrects and the study they belong to (in memory only)."""

    study_id: str
    study_uid: str
    source_series_uid: str
    correction: PacsSeries
    correction_header: Dataset
    node_header: Dataset


def referenced_series(ds: Dataset) -> list[str]:
    """Series Instance UIDs a SEG references (Referenced Series Sequence)."""
    return [str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence", [])
            if item.get("SeriesInstanceUID")]


def seg_time(ds: Dataset) -> str:
    """A sortable ``YYYYMMDDHHMMSS.ffffff`` string: Content Date/Time, else Series Date/Time."""
    for date_kw, time_kw in (("ContentDate", "ContentTime"), ("SeriesDate", "SeriesTime"),
                             ("InstanceCreationDate", "InstanceCreationTime")):
        date = str(ds.get(date_kw, "") or "")
        if date:
            t = str(ds.get(time_kw, "") or "").split(".")
            whole = (t[0] + "000000")[:6]
            frac = ((t[1] if len(t) > 1 else "") + "000000")[:6]
            return f"{date}{whole}.{frac}"
    return ""


def find_corrections(pacs: OrthancPacs, node_manufacturers: list[str], study_ids: list[str] | None = None,
                     ) -> list[Correction]:
    """Find the corrections in the PACS.

    Parameters
    ----------
    pacs : OrthancPacs
        The PACS.
    node_manufacturers : list of str
        The Manufacturer values of the node's own SEGs (compared case-insensitively).
    study_ids : list of str, optional
        Only these studies (default: all).

    Returns
    -------
    list of Correction
        One per (study, source series) with a newer correction than the node's SEG.
    """
    own = {m.strip().lower() for m in node_manufacturers}
    found: list[Correction] = []
    by_study: dict[str, list[PacsSeries]] = {}
    for s in pacs.seg_series():
        if s.instances and (study_ids is None or s.study_id in study_ids):
            by_study.setdefault(s.study_id, []).append(s)
    for study_id, segs in sorted(by_study.items()):
        if len(segs) < 2:
            continue
        node: dict[str, Dataset] = {}
        others: list[tuple[PacsSeries, Dataset]] = []
        for s in segs:
            header = pacs.dataset(s.instances[0], headers_only=True)
            if str(header.get("Manufacturer", "") or "").strip().lower() in own:
                for uid in referenced_series(header):
                    if uid not in node or seg_time(header) > seg_time(node[uid]):
                        node[uid] = header
            else:
                others.append((s, header))
        best: dict[str, tuple[PacsSeries, Dataset]] = {}
        for s, header in others:
            for uid in referenced_series(header):
                if uid in node and seg_time(header) > seg_time(node[uid]) and (
                        uid not in best or seg_time(header) > seg_time(best[uid][1])):
                    best[uid] = (s, header)
        for uid, (s, header) in best.items():
            found.append(Correction(study_id, str(header.get("StudyInstanceUID", "")), uid, s, header, node[uid]))
    return found
