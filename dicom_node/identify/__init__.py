"""Sequence identification: which MRI sequence is each series, and how sure are we.

Header rules (:mod:`~dicom_node.identify.header`, vocabulary in
:mod:`~dicom_node.identify.keywords`) give a label, a confidence and the evidence; the
pixel classifier (``models.seqclf``, imported lazily) adds an opinion from the image;
:mod:`~dicom_node.identify.fusion` combines them. Below the threshold the answer is
``UNKNOWN``; no pipeline runs on a guess. This package imports without torch.
"""

from __future__ import annotations

from dicom_node.identify.evidence import DEFAULT_THRESHOLD, Cue, Identification, SeriesIdentification
from dicom_node.identify.series import identify_series
from dicom_node.identify.study import identify_study

__all__ = [
    "DEFAULT_THRESHOLD",
    "Cue",
    "Identification",
    "SeriesIdentification",
    "identify_series",
    "identify_study",
]
