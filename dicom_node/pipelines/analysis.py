"""One analysis stage per study: headers read once, every series identified once, volumes built once.

:func:`analyse_study` reads the study's headers (no pixel data) in one pass, identifies
every series with :mod:`dicom_node.identify`, and picks one series per sequence label (the
most confident, then the one with most instances). The :class:`StudyAnalysis` it returns
reads a chosen series' voxels on first use only and keeps them, so pipelines that share a
study share the work (each model resamples the volumes it takes straight onto its own grid).

Which pipelines run is decided from :class:`SequenceNeeds`, combined by
:func:`combine_needs` from the model card (the source) and the node configuration's
``required_sequences``/``optional_sequences`` (which may only narrow it):

* required = the card's required sequences plus the configuration's;
* usable = the card's channels, or, when the configuration lists sequences, only those
  (plus the card's required ones); a sequence the configuration lists that the card does
  not take is refused;
* a pipeline runs when every required sequence is present (read) and, if it takes any, at
  least one usable one is; usable sequences that are present are fed, the others are not.

A pipeline without a card (e.g. the test pipeline) is gated by the configuration's lists alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_node.logs import uid_tag

if TYPE_CHECKING:

    from dicom_node.io.volume import Volume

__all__ = ["REFERENCE_PREFERENCE", "SequenceNeeds", "StudyAnalysis", "analyse_study", "combine_needs", "reference_label",
           "select_series"]

log = logging.getLogger(__name__)

#: Which series becomes the reference grid among equally fine ones (finest voxel wins first).
REFERENCE_PREFERENCE = ("T1C", "T1", "FLAIR", "T2")


@dataclass(frozen=True)
class SequenceNeeds:
    """The sequences a pipeline requires and the ones it can use.

    Attributes
    ----------
    required : tuple of str
        Every one must be present.
    usable : tuple of str
        Every sequence the pipeline takes (required ones included); empty: it takes none
        (and runs on any study whose required sequences are present).
    """

    required: tuple[str, ...] = ()
    usable: tuple[str, ...] = ()

    def missing(self, present: Collection[str]) -> list[str]:
        """The required sequences not in ``present``."""
        return [s for s in self.required if s not in present]

    def runnable(self, present: Collection[str]) -> bool:
        """Whether a study with ``present`` sequences can be served."""
        return not self.missing(present) and (not self.usable or any(s in present for s in self.usable))

    def describe(self) -> str:
        """What the pipeline needs, in words (``"FLAIR"``, ``"at least one of T1, T2"``)."""
        if self.required:
            return ", ".join(self.required)
        return f"at least one of {', '.join(self.usable)}" if self.usable else "nothing"

    def to_dict(self) -> dict[str, list[str]]:
        """The JSON form (for job summaries)."""
        return {"required": list(self.required), "usable": list(self.usable)}


def combine_needs(
    card_required: Sequence[str] | None,
    card_channels: Sequence[str] | None,
    config_required: Sequence[str] = (),
    config_optional: Sequence[str] = (),
    where: str = "pipeline",
) -> SequenceNeeds:
    """Combine a model card's sequences with the configuration's (which may only narrow them).

    Parameters
    ----------
    card_required : sequence of str or None
        The card's required sequences; ``None`` for a pipeline without a card.
    card_channels : sequence of str or None
        The sequences the model takes (its input channels); ``None`` without a card.
    config_required, config_optional : sequence of str
        The ``[[pipelines]]`` entry's lists.
    where : str
        Names the pipeline in error messages.

    Returns
    -------
    SequenceNeeds

    Raises
    ------
    ValueError
        If the configuration lists a sequence the model does not take.
    """
    cfg_req = [str(s) for s in config_required]
    cfg_opt = [str(s) for s in config_optional]
    if card_channels is None:
        usable = list(dict.fromkeys([*cfg_req, *cfg_opt]))
        return SequenceNeeds(tuple(cfg_req), tuple(usable))
    channels = [str(s) for s in card_channels]
    stray = [s for s in [*cfg_req, *cfg_opt] if s not in channels]
    if stray:
        raise ValueError(f"{where}: required_sequences/optional_sequences name {', '.join(stray)}, which the model "
                         f"does not take (it takes {', '.join(channels)}); the configuration may only narrow the card.")
    required = list(dict.fromkeys([*(str(s) for s in card_required or ()), *cfg_req]))
    listed = set(cfg_req) | set(cfg_opt)
    usable = [s for s in channels if not listed or s in listed or s in required]
    return SequenceNeeds(tuple(required), tuple(usable))


def select_series(rows: Iterable[Any], labels: Collection[str] | None = None) -> dict[str, Any]:
    """Pick one series per sequence label: the most confident, then the one with most instances.

    Parameters
    ----------
    rows : iterable
        Series identifications (``label``, ``confidence``, ``series_uid``, ``n_instances``).
    labels : collection of str, optional
        Only these labels (default: every label but ``UNKNOWN``).

    Returns
    -------
    dict
        Sequence label to its chosen row.
    """
    chosen: dict[str, Any] = {}
    for row in rows:
        label = str(row.label)
        if not row.series_uid or label == "UNKNOWN" or (labels is not None and label not in labels):
            continue
        best = chosen.get(label)
        key = (float(row.confidence), int(getattr(row, "n_instances", 0) or 0))
        if best is None or key > (float(best.confidence), int(getattr(best, "n_instances", 0) or 0)):
            chosen[label] = row
    return chosen


@dataclass
class StudyAnalysis:
    """A study identified once; volumes read once, on demand.

    Attributes
    ----------
    study_uid : str
        The Study Instance UID.
    rows : list of SeriesIdentification
        One per series (identified once), plus a row for unreadable files if any.
    files : dict
        Series UID to its files.
    chosen : dict
        Sequence label to the row of the series chosen for it.
    seconds : dict
        Seconds spent: ``headers``, ``identify``, ``read``.
    """

    study_uid: str
    rows: list[Any]
    files: dict[str, list[Path]]
    chosen: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    _volumes: dict[str, Volume] = field(default_factory=dict, repr=False)
    _refused: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def identified(self) -> list[str]:
        """The sequence labels found in the study (one series chosen for each)."""
        return list(self.chosen)

    def volumes(self, labels: Iterable[str]) -> dict[str, Volume]:
        """The volumes of the chosen series for ``labels`` (read on first use, then kept).

        A series the reader refuses (missing slices, tilt, ...) is left out and
        :meth:`unreadable` says why; never an exception.

        Parameters
        ----------
        labels : iterable of str
            Sequence labels; ones absent from the study are skipped.

        Returns
        -------
        dict
            Label to its (first) volume, in the order of ``labels``.
        """
        from dicom_node.io.errors import SeriesReadError
        from dicom_node.io.reader import read_series

        out: dict[str, Volume] = {}
        for label in labels:
            row = self.chosen.get(label)
            if row is None or label in self._refused:
                continue
            if label not in self._volumes:
                t = time.perf_counter()
                try:
                    self._volumes[label] = read_series(self.files[row.series_uid])[0]
                except SeriesReadError as exc:
                    self._refused[label] = f"{label} not used: {exc}"
                    log.warning("analysis: %s series refused by the reader: %s", label, exc)
                    continue
                finally:
                    self.seconds["read"] = self.seconds.get("read", 0.0) + time.perf_counter() - t
            out[label] = self._volumes[label]
        return out

    def unreadable(self, labels: Iterable[str] | None = None) -> list[str]:
        """One sentence per chosen series (of ``labels``, default all) the reader refused."""
        return [v for k, v in self._refused.items() if labels is None or k in set(labels)]

    def evidence(self) -> list[Volume]:
        """One readable series of the study (any), for an SR that has nothing else to reference.

        Returns
        -------
        list of Volume
            Empty when no series of the study can be read.
        """
        from dicom_node.io.errors import SeriesReadError
        from dicom_node.io.reader import read_series

        if self._volumes:
            return [next(iter(self._volumes.values()))]
        for uid, files in self.files.items():
            try:
                return [read_series(files)[0]]
            except SeriesReadError as exc:
                log.warning("series %s not usable as SR evidence: %s", uid_tag(uid), exc)
        return []

    def sequences_found(self) -> dict[str, str]:
        """Label to series description of every identified series (for summaries)."""
        return {str(r.label): r.description for r in self.rows}


def reference_label(volumes: dict[str, Volume], preference: Sequence[str] = REFERENCE_PREFERENCE) -> str:
    """The label whose volume becomes the reference grid: the finest voxel, then ``preference``.

    Parameters
    ----------
    volumes : dict
        Label to volume (non-empty).
    preference : sequence of str
        Tie-break order among equally fine volumes.

    Returns
    -------
    str
    """
    import numpy as np

    def voxel(label: str) -> float:
        return abs(float(np.linalg.det(volumes[label].affine[:3, :3])))

    order = [lab for lab in preference if lab in volumes] + [lab for lab in volumes if lab not in preference]
    return min(order, key=lambda lab: (round(voxel(lab), 3), order.index(lab)))


def analyse_study(study_uid: str, paths: Iterable[str | Path], *, use_pixels: bool = True) -> StudyAnalysis:
    """Read a study's headers once and identify every series once.

    Parameters
    ----------
    study_uid : str
        The Study Instance UID (for logs and result UIDs).
    paths : iterable of str or Path
        The study's instance files.
    use_pixels : bool
        Let identification use the pixel classifier too.

    Returns
    -------
    StudyAnalysis
    """
    from dicom_node.identify.study import identify_headers, read_headers

    t = time.perf_counter()
    series, problems = read_headers([Path(p) for p in paths])
    seconds = {"headers": time.perf_counter() - t}
    t = time.perf_counter()
    rows = identify_headers(series, problems, use_pixels=use_pixels)
    seconds["identify"] = time.perf_counter() - t
    files = {uid: [p for p, _ in items] for uid, items in series.items()}
    chosen = select_series(rows)
    log.info("analysis of study %s: %d series, found %s", uid_tag(study_uid), len(files),
             ", ".join(sorted(chosen)) or "no known sequence")
    return StudyAnalysis(study_uid=study_uid, rows=rows, files=files, chosen=chosen, seconds=seconds)
