"""De-identification with ``dicom-anonymizer`` (DICOM PS3.15 Annex E, Basic Application Level
Confidentiality Profile), applied in memory before anything is written.

Why this library: it implements the basic profile's action table (D, Z, X, U and their
combinations) from the standard's own tables (``dicomfields_2023``) rather than a list kept
by hand, is maintained by Kitware, works on pydicom datasets in memory, and keeps replaced
UIDs consistent through one mapping. Two things are added here because a SEG needs them to
stay readable:

- the profile's table is applied to every nested item too (dicom-anonymizer acts on the top
  level only), so a name or UID inside a sequence is treated like one at the top;
- sequences whose action is X/Z/U* (Referenced Image Sequence, Source Image Sequence) are
  kept and their contained instance UIDs replaced (the U* branch the standard allows),
  so the SEG still points at the de-identified source images. SOP *Class* UIDs are not
  identifiers and are kept.

Private tags are removed. The library's dummy dates (``00010101``) become ``19000101``: the same
dummy, in a year that DICOM validators (dciodvfy) accept. One :class:`Deidentifier` maps the UIDs of one case consistently
across its series and its SEG; a new one starts a new mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from pydicom import Dataset

__all__ = ["PROFILE", "Deidentifier"]

_KEEP_AND_RECURSE = ((0x0008, 0x1140), (0x0008, 0x2112))  # Referenced / Source Image Sequence
#: dicom-anonymizer's dummy dates (year 1) are refused by dciodvfy; the same dummy in a year it accepts.
_DUMMY_DATES = {"DA": ("00010101", "19000101"), "DT": ("00010101010101.000000+0000", "19000101000000.000000+0000")}


def _profile() -> str:
    return f"DICOM PS3.15 basic profile (dicom-anonymizer {version('dicom-anonymizer')}, dicomfields_2023 table)"


PROFILE = _profile()


class Deidentifier:
    """Apply the basic profile to datasets of one case, with one consistent UID mapping."""

    def __init__(self) -> None:
        from dicomanonymizer import simpledicomanonymizer as sda

        self._sda = sda
        self.uids: dict[str, str] = {}
        rules: dict[Any, Callable[..., None]] = dict.fromkeys(_KEEP_AND_RECURSE, sda.keep)
        self._rules = rules

    def __call__(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place (and return it)."""
        sda = self._sda
        saved = dict(sda.dictionary)
        sda.dictionary.clear()
        sda.dictionary.update(self.uids)
        try:
            self._apply(ds)
            self.uids = dict(sda.dictionary)
        finally:
            sda.dictionary.clear()
            sda.dictionary.update(saved)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "PS3.15 basic profile (dicom-anonymizer)"
        if hasattr(ds, "file_meta") and "SOPInstanceUID" in ds:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds

    def _apply(self, ds: Dataset) -> None:
        self._sda.anonymize_dataset(ds, extra_anonymization_rules=self._rules, delete_private_tags=True)
        for elem in list(ds):
            if elem.VR == "SQ" and elem.value is not None:
                for item in elem.value:
                    self._apply(item)
            elif elem.VR in _DUMMY_DATES and elem.value == _DUMMY_DATES[elem.VR][0]:
                elem.value = _DUMMY_DATES[elem.VR][1]
