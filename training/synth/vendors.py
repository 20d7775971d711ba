"""Vendor header styles: equipment names and per-series vocabulary (Siemens, GE, Philips).

SeriesDescription, SequenceName, ScanningSequence, SequenceVariant, ScanOptions and
ImageType follow what each vendor's scanners commonly write for a brain protocol
(e.g. Siemens ``t2_tirm_tra_dark-fluid`` with ``*tir2d1_16``, GE ``AX T2 FLAIR`` with
``*_GEMS`` scan options, Philips ``T2W_FLAIR`` with ``M_SE`` image types).
"""

from __future__ import annotations

from dataclasses import dataclass

from training.synth.protocols import Protocol

__all__ = ["Equipment", "SeriesStyle", "equipment", "series_style"]


@dataclass(frozen=True)
class Equipment:
    """General Equipment module values."""

    manufacturer: str
    model: str
    software: str
    series_number_step: int


@dataclass(frozen=True)
class SeriesStyle:
    """Header vocabulary of one series."""

    description: str
    sequence_name: str
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    scan_options: tuple[str, ...]
    image_type: tuple[str, ...]


def equipment(vendor: str, field_strength: float) -> Equipment:
    """Manufacturer, model and software version for a vendor and field strength.

    Parameters
    ----------
    vendor : str
        ``"siemens"``, ``"ge"`` or ``"philips"``.
    field_strength : float
        1.5 or 3.0.

    Returns
    -------
    Equipment
        The values written to the General Equipment module.
    """
    hi = field_strength >= 2.0
    if vendor == "siemens":
        return Equipment("SIEMENS", "Skyra" if hi else "Aera", "syngo MR E11", 1)
    if vendor == "ge":
        return Equipment("GE MEDICAL SYSTEMS", "SIGNA Premier" if hi else "SIGNA Artist", "27\\LX\\MR Software release:RX27.0_R04", 1)
    if vendor == "philips":
        return Equipment("Philips Medical Systems", "Ingenia" if hi else "Achieva", "5.6.1\\5.6.1.0", 100)
    raise ValueError(f"Unknown vendor {vendor!r}; expected siemens, ge or philips.")


_PLANE_SIEMENS = {"axial": "tra", "sagittal": "sag", "coronal": "cor"}
_PLANE_GE = {"axial": "AX", "sagittal": "SAG", "coronal": "COR"}


def _siemens(p: Protocol) -> SeriesStyle:
    pl = _PLANE_SIEMENS.get(p.plane, "tra")
    km = "_KM" if p.contrast else ""
    mag = ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")
    if p.kind == "se":
        return SeriesStyle(f"t1_se_{pl}{km}", "*se2d1", ("SE",), ("SP",), ("SAT1",), mag)
    if p.kind == "mprage":
        return SeriesStyle(f"t1_mprage_{pl}_p2_iso{km}", "*tfl3d1_16ns", ("GR", "IR"), ("SK", "SP", "MP"), ("IR",), mag)
    if p.kind == "tse":
        name = "pd" if p.sequence == "PD" else "t2"
        return SeriesStyle(f"{name}_tse_{pl}", f"*tse2d1_{p.echo_train_length}", ("SE",), ("SK", "SP", "OSP"), ("PFP",), mag)
    if p.kind == "ir":
        return SeriesStyle(f"t2_tirm_{pl}_dark-fluid", "*tir2d1_16", ("SE", "IR"), ("SK", "SP", "MP"), ("IR",), mag)
    if p.kind == "dwi":
        return SeriesStyle("ep2d_diff_3scan_trace_p2", "*ep_b1000t", ("EP",), ("SK", "SP"), ("PFP", "FS"),
                           ("ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW", "ND", "NORM"))
    if p.kind == "adc":
        return SeriesStyle("ep2d_diff_3scan_trace_p2_ADC", "*ep_b0_1000", ("EP",), ("SK", "SP"), ("PFP", "FS"),
                           ("DERIVED", "PRIMARY", "DIFFUSION", "ADC", "ND", "NORM"))
    if p.kind == "gre":
        return SeriesStyle(f"t2_swi_{pl}_p2_{p.slice_thickness_mm:g}mm_Mag", "*swi3d1r", ("GR",), ("SP",), (), mag)
    return SeriesStyle("localizer", "*fl2d1", ("GR",), ("SP",), (), ("ORIGINAL", "PRIMARY", "M", "ND", "NORM"))


def _ge(p: Protocol) -> SeriesStyle:
    pl = _PLANE_GE.get(p.plane, "AX")
    post = " +C" if p.contrast else ""
    img = ("ORIGINAL", "PRIMARY", "OTHER")
    fast = ("FAST_GEMS", "EDR_GEMS", "TRF_GEMS", "FILTERED_GEMS")
    if p.kind == "se":
        return SeriesStyle(f"{pl} T1 SE{post}", "se", ("SE",), ("SK", "OSP"), ("EDR_GEMS", "FILTERED_GEMS"), img)
    if p.kind == "mprage":
        return SeriesStyle(f"{pl} T1 BRAVO{post}", "efgre3d", ("GR", "IR"), ("SS", "SK"), ("FAST_GEMS", "EDR_GEMS", "IR_GEMS", "SEQ_GEMS"), img)
    if p.kind == "tse":
        name = "PD" if p.sequence == "PD" else "T2"
        return SeriesStyle(f"{pl} {name} FSE", "fse-xl", ("SE",), ("SK", "OSP"), fast, img)
    if p.kind == "ir":
        return SeriesStyle(f"{pl} T2 FLAIR", "fse-xl", ("SE", "IR"), ("SK", "OSP", "MP"), ("FAST_GEMS", "EDR_GEMS", "IR_GEMS", "FILTERED_GEMS"), img)
    if p.kind == "dwi":
        return SeriesStyle("AX DWI 1000b", "epi2", ("EP", "SE"), ("SK", "OSP"), ("EPI_GEMS", "PFF"), img)
    if p.kind == "adc":
        return SeriesStyle("Apparent Diffusion Coefficient (mm2/s)", "epi2", ("EP", "SE"), ("SK", "OSP"), ("EPI_GEMS", "PFF"),
                           ("DERIVED", "SECONDARY", "ADC"))
    if p.kind == "gre":
        return SeriesStyle(f"{pl} SWAN", "swan", ("GR",), ("SS", "SK"), ("FAST_GEMS", "EDR_GEMS", "SEQ_GEMS"), img)
    return SeriesStyle("3-Plane Loc", "fgre", ("GR",), ("SS", "SK"), ("FAST_GEMS",), img)


def _philips(p: Protocol) -> SeriesStyle:
    suffix = {"axial": "", "sagittal": "_SAG", "coronal": "_COR"}.get(p.plane, "")
    gd = "_GD" if p.contrast else ""
    se = ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE")
    ffe = ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE")
    if p.kind == "se":
        return SeriesStyle(f"T1W_SE{suffix}{gd}", "SE", ("SE",), ("SK",), (), se)
    if p.kind == "mprage":
        return SeriesStyle(f"T1W_3D_TFE{gd}", "T1TFE", ("GR", "IR"), ("SK", "MP"), ("IR",), ("ORIGINAL", "PRIMARY", "M_IR", "M", "IR"))
    if p.kind == "tse":
        name = "PDW" if p.sequence == "PD" else "T2W"
        return SeriesStyle(f"{name}_TSE{suffix}", "TSE", ("SE",), ("SK",), (), se)
    if p.kind == "ir":
        return SeriesStyle(f"T2W_FLAIR{suffix}", "IRTSE", ("SE", "IR"), ("SK", "MP"), ("IR",), ("ORIGINAL", "PRIMARY", "M_IR", "M", "IR"))
    if p.kind == "dwi":
        return SeriesStyle("DWI", "DwiSE", ("SE",), ("SK",), ("FS",), se)
    if p.kind == "adc":
        return SeriesStyle("dADC", "DwiSE", ("SE",), ("SK",), ("FS",), ("DERIVED", "PRIMARY", "ADC", "ADC"))
    if p.kind == "gre":
        return SeriesStyle("SWIp", "FEEPI", ("GR",), ("SK", "SP"), (), ffe)
    return SeriesStyle("Survey", "FFE", ("GR",), ("SP",), (), ffe)


def series_style(vendor: str, protocol: Protocol) -> SeriesStyle:
    """Header vocabulary of a series for a vendor.

    Parameters
    ----------
    vendor : str
        ``"siemens"``, ``"ge"`` or ``"philips"``.
    protocol : Protocol
        The series' protocol (kind, plane, contrast).

    Returns
    -------
    SeriesStyle
        Description, sequence name, scanning sequence, variant, options and image type.
    """
    if vendor == "siemens":
        return _siemens(protocol)
    if vendor == "ge":
        return _ge(protocol)
    if vendor == "philips":
        return _philips(protocol)
    raise ValueError(f"Unknown vendor {vendor!r}; expected siemens, ge or philips.")
