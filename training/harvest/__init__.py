"""Harvest radiologists' corrected SEGs from the PACS into a de-identified, versioned training set.

:func:`harvest` finds the corrections (:mod:`.select`), reads them through Orthanc's REST API
(:mod:`.pacs`, ``orthanc-api-client``), de-identifies them in memory (:mod:`.deid`,
``dicom-anonymizer``, PS3.15 basic profile), converts them with the node's imaging I/O
(:mod:`.convert`) and writes a new version of the training set (:mod:`.dataset`).
"""

from __future__ import annotations

from training.harvest.dataset import AddResult, TrainingSet
from training.harvest.deid import PROFILE, Deidentifier
from training.harvest.pacs import OrthancPacs, PacsError
from training.harvest.run import HarvestConfig, HarvestReport, harvest
from training.harvest.select import Correction, find_corrections

__all__ = [
    "PROFILE",
    "AddResult",
    "Correction",
    "Deidentifier",
    "HarvestConfig",
    "HarvestReport",
    "OrthancPacs",
    "PacsError",
    "TrainingSet",
    "find_corrections",
    "harvest",
]
