"""Read the facts that identification needs from the headers of one series.

Classic MR (one file per slice) and Enhanced MR (multi-frame, functional groups) are both
flattened into one :class:`HeaderFacts`. Vendor private tags are read only under their
private creator (Siemens ``SIEMENS MR HEADER``, GE ``GEMS_*``, Philips ``Philips Imaging
DD 001``), so a tag number reused by another vendor is never misread.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

__all__ = ["HeaderFacts", "extract_facts", "normalise_vendor"]

_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"

#: (vendor, group, element offset, private creator) of b-value tags.
_PRIVATE_B_VALUES: tuple[tuple[str, int, int, str], ...] = (
    ("SIEMENS", 0x0019, 0x0C, "SIEMENS MR HEADER"),
    ("GE", 0x0043, 0x39, "GEMS_PARM_01"),
    ("PHILIPS", 0x2001, 0x03, "Philips Imaging DD 001"),
)

#: (group, element offset, private creator) of vendor sequence-name tags.
_PRIVATE_SEQUENCE_NAMES: tuple[tuple[int, int, str], ...] = (
    (0x0019, 0x9C, "GEMS_ACQU_01"),  # GE pulse sequence (PSD) name, e.g. "fse-xl"
    (0x0019, 0x9E, "GEMS_ACQU_01"),  # GE internal pulse sequence name
    (0x2001, 0x20, "Philips Imaging DD 001"),  # Philips scanning technique, e.g. "TSE"
)


def normalise_vendor(manufacturer: str) -> str:
    """Map a Manufacturer string to ``SIEMENS``, ``GE``, ``PHILIPS``, ``CANON``, ``HITACHI`` or ``OTHER``.

    Parameters
    ----------
    manufacturer : str
        The (0008,0070) value, any case.

    Returns
    -------
    str
        The vendor key.
    """
    m = manufacturer.upper()
    if "SIEMENS" in m:
        return "SIEMENS"
    if m.startswith("GE") or "GENERAL ELECTRIC" in m:
        return "GE"
    if "PHILIPS" in m:
        return "PHILIPS"
    if "TOSHIBA" in m or "CANON" in m:
        return "CANON"
    if "HITACHI" in m or "FUJIFILM" in m:
        return "HITACHI"
    return "OTHER"


@dataclass
class HeaderFacts:
    """What the headers of one series say, normalised.

    Text fields are upper case; sets hold upper-case code strings; times are in ms;
    missing values are ``None`` or empty.
    """

    modality: str = ""
    sop_class_uid: str = ""
    vendor: str = "OTHER"
    series_description: str = ""
    protocol_name: str = ""
    sequence_names: list[str] = field(default_factory=list)
    scanning_sequence: set[str] = field(default_factory=set)
    sequence_variant: set[str] = field(default_factory=set)
    scan_options: set[str] = field(default_factory=set)
    acquisition_type: str = ""
    tr: float | None = None
    te: float | None = None
    ti: float | None = None
    flip: float | None = None
    b_values: set[float] = field(default_factory=set)
    image_type: set[str] = field(default_factory=set)
    acquisition_contrast: set[str] = field(default_factory=set)
    echo_pulse_sequence: str = ""
    inversion_recovery: bool | None = None
    contrast_agent: str = ""
    n_instances: int = 0
    n_orientations: int = 0
    n_slices: int = 0
    enhanced: bool = False

    @property
    def texts(self) -> list[tuple[str, str]]:
        """Descriptive texts as (name, value) pairs, non-empty only."""
        pairs = [("SeriesDescription", self.series_description), ("ProtocolName", self.protocol_name)]
        return [(n, v) for n, v in pairs if v]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip().upper()
    return str(value).strip().upper()


def _codes(value: Any) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str):
        items: Iterable[Any] = value.split("\\")
    elif isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        items = value
    else:
        items = [value]
    return {str(v).strip().upper() for v in items if str(v).strip()}


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if len(value) == 0:
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _private(ds: Dataset, group: int, offset: int, creator: str) -> Any:
    try:
        return ds.get_private_item(group, offset, creator).value
    except (KeyError, ValueError):
        return None


def _private_b_value(ds: Dataset, vendor: str) -> float | None:
    for v, group, offset, creator in _PRIVATE_B_VALUES:
        if v != vendor:
            continue
        raw = _private(ds, group, offset, creator)
        if raw is None:
            continue
        b = _number(raw)
        if b is None:
            continue
        if v == "GE":
            b = b % 1_000_000_000  # some GE versions add 1e9 to flag the b-value
        return b
    return None


def _csa_b_value(ds: Dataset) -> float | None:
    """Read ``B_value`` from the Siemens CSA image header when nibabel is available."""
    raw = _private(ds, 0x0029, 0x10, "SIEMENS CSA HEADER")
    if not isinstance(raw, bytes):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel warns that its DICOM readers are experimental
            from nibabel.nicom import csareader
    except ImportError:
        return None
    try:
        info = csareader.read(raw)
        value = csareader.get_scalar(info, "B_value")
    except (csareader.CSAReadError, KeyError, IndexError, ValueError, TypeError):
        return None
    return _number(value)


def _functional_items(ds: Dataset) -> list[Dataset]:
    items: list[Dataset] = []
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        items.append(shared[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        items.extend(per_frame)
    return items


def _first_in(groups: Sequence[Dataset], seq: str, keyword: str) -> Any:
    for g in groups:
        s = g.get(seq)
        if s and keyword in s[0]:
            value = s[0].get(keyword)
            if value not in (None, ""):
                return value
    return None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _enhanced_facts(ds: Dataset, facts: HeaderFacts, acc: dict[str, list[float]]) -> None:
    groups = _functional_items(ds)
    for name, seq, kw in (
        ("tr", "MRTimingAndRelatedParametersSequence", "RepetitionTime"),
        ("flip", "MRTimingAndRelatedParametersSequence", "FlipAngle"),
        ("te", "MREchoSequence", "EffectiveEchoTime"),
    ):
        v = _number(_first_in(groups, seq, kw))
        if v is not None:
            acc[name].append(v)
    ti = _first_in(groups, "MRModifierSequence", "InversionTimes")
    if _number(ti) is not None:
        acc["ti"].append(float(_number(ti) or 0.0))
    ir = _first_in(groups, "MRModifierSequence", "InversionRecovery")
    if ir is not None:
        facts.inversion_recovery = _text(ir) == "YES"
    orientations: set[tuple[float, ...]] = set()
    for g in groups:
        diff = g.get("MRDiffusionSequence")
        if diff and "DiffusionBValue" in diff[0]:
            b = _number(diff[0].DiffusionBValue)
            if b is not None:
                facts.b_values.add(b)
        ftype = g.get("MRImageFrameTypeSequence")
        if ftype:
            facts.image_type |= _codes(ftype[0].get("FrameType"))
            facts.acquisition_contrast |= _codes(ftype[0].get("AcquisitionContrast"))
        plane = g.get("PlaneOrientationSequence")
        if plane and "ImageOrientationPatient" in plane[0]:
            orientations.add(tuple(round(float(x), 2) for x in plane[0].ImageOrientationPatient))
    if orientations:
        facts.n_orientations = max(facts.n_orientations, len(orientations))
    agent = _first_in(groups, "ContrastBolusUsageSequence", "ContrastBolusAgentAdministered")
    if agent is not None and _text(agent) == "YES":
        facts.contrast_agent = facts.contrast_agent or "ADMINISTERED"
    frames = _number(ds.get("NumberOfFrames"))
    facts.n_slices += int(frames or 1)


def extract_facts(headers: Sequence[Dataset]) -> HeaderFacts:
    """Flatten the headers of one series into :class:`HeaderFacts`.

    Parameters
    ----------
    headers : sequence of pydicom.Dataset
        The instances of one series (pixel data not needed).

    Returns
    -------
    HeaderFacts
        The normalised facts; fields stay empty where headers say nothing.
    """
    facts = HeaderFacts(n_instances=len(headers))
    if not headers:
        return facts
    first = headers[0]
    facts.modality = _text(first.get("Modality"))
    facts.sop_class_uid = str(first.get("SOPClassUID", ""))
    facts.vendor = normalise_vendor(_text(first.get("Manufacturer")))
    facts.series_description = _text(first.get("SeriesDescription"))
    facts.protocol_name = _text(first.get("ProtocolName"))
    facts.acquisition_type = _text(first.get("MRAcquisitionType"))
    facts.echo_pulse_sequence = _text(first.get("EchoPulseSequence"))
    acc: dict[str, list[float]] = {"tr": [], "te": [], "ti": [], "flip": []}
    names: list[str] = []
    orientations: set[tuple[float, ...]] = set()
    for ds in headers:
        facts.scanning_sequence |= _codes(ds.get("ScanningSequence"))
        facts.sequence_variant |= _codes(ds.get("SequenceVariant"))
        facts.scan_options |= _codes(ds.get("ScanOptions"))
        facts.image_type |= _codes(ds.get("ImageType"))
        facts.acquisition_contrast |= _codes(ds.get("AcquisitionContrast"))
        for name, kw in (("tr", "RepetitionTime"), ("te", "EchoTime"), ("ti", "InversionTime"), ("flip", "FlipAngle")):
            v = _number(ds.get(kw))
            if v is not None:
                acc[name].append(v)
        for kw in ("SequenceName", "PulseSequenceName"):
            t = _text(ds.get(kw))
            if t and t not in names:
                names.append(t)
        for group, offset, creator in _PRIVATE_SEQUENCE_NAMES:
            t = _text(_private(ds, group, offset, creator))
            if t and t not in names:
                names.append(t)
        b = _number(ds.get("DiffusionBValue"))
        if b is None:
            b = _private_b_value(ds, facts.vendor)
        if b is None and facts.vendor == "SIEMENS":
            b = _csa_b_value(ds)
        if b is not None:
            facts.b_values.add(b)
        agent = _text(ds.get("ContrastBolusAgent"))
        if agent and not facts.contrast_agent:
            facts.contrast_agent = agent
        iop = ds.get("ImageOrientationPatient")
        if iop is not None and len(iop) == 6:
            orientations.add(tuple(round(float(x), 2) for x in iop))
        if ds.get("PerFrameFunctionalGroupsSequence") is not None or ds.get("SharedFunctionalGroupsSequence"):
            facts.enhanced = True
            _enhanced_facts(ds, facts, acc)
        else:
            facts.n_slices += 1
    facts.sequence_names = names
    facts.n_orientations = max(facts.n_orientations, len(orientations))
    facts.tr = _median(acc["tr"])
    facts.te = _median(acc["te"])
    facts.flip = _median(acc["flip"])
    tis = [t for t in acc["ti"] if t > 0]
    facts.ti = _median(tis)
    facts.enhanced = facts.enhanced or facts.sop_class_uid == _ENHANCED_MR
    return facts
