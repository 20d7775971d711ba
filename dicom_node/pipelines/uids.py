"""Deterministic UIDs for result objects: the same job's results always carry the same UIDs.

A SEG or SR made by pipeline *P* with model *M* version *V* for study *S* gets Series and
SOP Instance UIDs derived (SHA-512, :func:`pydicom.uid.generate_uid` with ``entropy_srcs``)
from ``(S, M, V, P)`` and the object's role. A re-run or re-delivered job therefore
*replaces* its earlier result in a PACS rather than adding a copy (the PACS keeps one
instance per SOP Instance UID), and ``mrinode infer`` twice on one study writes the same
UIDs. The "not run" SR a pipeline writes when sequences are missing has the UIDs of the
SR it would have written, so a later complete study's result replaces it. A new model
version gives new UIDs: its result is a new series beside the old one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ResultUIDs", "result_uids"]


@dataclass(frozen=True)
class ResultUIDs:
    """The UIDs of one pipeline's results for one study.

    Attributes
    ----------
    seg_series, seg_instance : str
        SeriesInstanceUID and SOPInstanceUID of the SEG.
    sr_series, sr_instance : str
        SeriesInstanceUID and SOPInstanceUID of the SR.
    """

    seg_series: str
    seg_instance: str
    sr_series: str
    sr_instance: str


def result_uids(study_uid: str, model_name: str, model_version: str, pipeline: str) -> ResultUIDs:
    """Derive the result UIDs of one (study, model, version, pipeline).

    Parameters
    ----------
    study_uid : str
        The source Study Instance UID.
    model_name, model_version : str
        The model bundle's name and version (the card's).
    pipeline : str
        The pipeline's name (the ``[[pipelines]] name``).

    Returns
    -------
    ResultUIDs
        Valid UIDs (pydicom's root, at most 64 characters).

    Raises
    ------
    ValueError
        If ``study_uid`` is empty (nothing to derive from).
    """
    from pydicom.uid import generate_uid

    if not str(study_uid).strip():
        raise ValueError("result UIDs need the source study's UID; it is empty.")
    base = ["mrinode-result-v1", str(study_uid), str(model_name), str(model_version), str(pipeline)]

    def uid(role: str) -> str:
        return str(generate_uid(entropy_srcs=[*base, role]))

    return ResultUIDs(uid("seg-series"), uid("seg-instance"), uid("sr-series"), uid("sr-instance"))
