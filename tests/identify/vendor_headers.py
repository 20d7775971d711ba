"""Vendor-styled MR header series built with pydicom (no pixels needed for header rules).

Parameters follow each vendor's usual brain protocols (Siemens, GE, Philips, Canon):
ScanningSequence / SequenceVariant / ScanOptions, sequence names, ImageType conventions,
private b-value tags under their private creators, ContrastBolusAgent. Descriptions come
in several languages. Used as the synthetic part of the labelled header corpus.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, generate_uid

from training.realdata.stage import DESCRIPTIVE_KEYWORDS, strip_descriptive

__all__ = ["DESCRIPTIONS", "PROTOCOLS", "StyledSeries", "build_corpus", "make_series", "strip_descriptive"]

AX = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
SAG = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
COR = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]


@dataclass(frozen=True)
class Protocol:
    """Acquisition parameters of one vendor-styled series kind."""

    vendor: str
    label: str
    tags: dict[str, Any]
    private: tuple[tuple[int, int, str, str, Any], ...] = ()  # (group, offset, creator, VR, value)
    b_values: tuple[float, ...] = ()
    three_plane: bool = False
    agent: str = ""


@dataclass
class StyledSeries:
    """One generated series with its expected label."""

    expected: str
    vendor: str
    description: str
    headers: list[Dataset] = field(default_factory=list)
    keyword_only_contrast: bool = False


_MANUFACTURER = {"SIEMENS": "SIEMENS", "GE": "GE MEDICAL SYSTEMS", "PHILIPS": "Philips Medical Systems", "CANON": "TOSHIBA_MEC"}
_SIEMENS_HDR = "SIEMENS MR HEADER"
_GE_PARM = "GEMS_PARM_01"
_GE_ACQU = "GEMS_ACQU_01"
_PHILIPS = "Philips Imaging DD 001"


def _p(vendor: str, label: str, **tags: Any) -> Protocol:
    private = tags.pop("private", ())
    b_values = tags.pop("b_values", ())
    three_plane = tags.pop("three_plane", False)
    agent = tags.pop("agent", "")
    return Protocol(vendor, label, tags, private, b_values, three_plane, agent)


def _se(tr: float, te: float, **kw: Any) -> dict[str, Any]:
    return {"ScanningSequence": "SE", "RepetitionTime": tr, "EchoTime": te, "FlipAngle": kw.pop("flip", 90), **kw}


PROTOCOLS: tuple[Protocol, ...] = (
    # --- Siemens ---
    _p("SIEMENS", "T1", SequenceName="*tfl3d1_16ns", ScanningSequence=["GR", "IR"], SequenceVariant=["SK", "SP", "MP"],
       ScanOptions="IR", MRAcquisitionType="3D", RepetitionTime=2300, EchoTime=2.98, InversionTime=900, FlipAngle=9),
    _p("SIEMENS", "T1", SequenceName="*se2d1", **_se(550, 8.9), SequenceVariant="SP", MRAcquisitionType="2D"),
    _p("SIEMENS", "T1C", SequenceName="*tfl3d1_16ns", ScanningSequence=["GR", "IR"], SequenceVariant=["SK", "SP", "MP"],
       ScanOptions="IR", MRAcquisitionType="3D", RepetitionTime=2300, EchoTime=2.98, InversionTime=900, FlipAngle=9,
       agent="Gadovist"),
    _p("SIEMENS", "T2", SequenceName="*tse2d1_15", **_se(5000, 98, flip=150), SequenceVariant=["SK", "SP", "OSP"],
       MRAcquisitionType="2D"),
    _p("SIEMENS", "FLAIR", SequenceName="*tir2d1_16", ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "SP", "MP", "OSP"],
       ScanOptions="IR", MRAcquisitionType="2D", RepetitionTime=9000, EchoTime=81, InversionTime=2500, FlipAngle=150),
    _p("SIEMENS", "FLAIR", SequenceName="*spcir_278ns", ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "SP", "MP"],
       ScanOptions="IR", MRAcquisitionType="3D", RepetitionTime=5000, EchoTime=387, InversionTime=1800, FlipAngle=120),
    _p("SIEMENS", "PD", SequenceName="*tse2d1_7", **_se(3000, 12, flip=150), SequenceVariant=["SK", "SP"], MRAcquisitionType="2D"),
    _p("SIEMENS", "DWI", SequenceName="*ep_b1000t", ScanningSequence="EP", SequenceVariant=["SK", "SP"], ScanOptions=["PFP", "FS"],
       MRAcquisitionType="2D", RepetitionTime=6000, EchoTime=89, FlipAngle=90,
       ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW", "ND", "NORM"], b_values=(0, 1000)),
    _p("SIEMENS", "ADC", SequenceName="*ep_b0_1000", ScanningSequence="EP", SequenceVariant=["SK", "SP"], ScanOptions=["PFP", "FS"],
       MRAcquisitionType="2D", RepetitionTime=6000, EchoTime=89, FlipAngle=90,
       ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "ADC", "ND", "NORM"]),
    _p("SIEMENS", "SWI", SequenceName="*swi3d1r", ScanningSequence="GR", SequenceVariant=["SP", "OSP"], MRAcquisitionType="3D",
       RepetitionTime=27, EchoTime=20, FlipAngle=15, ImageType=["ORIGINAL", "PRIMARY", "M", "SWI", "ND", "NORM"]),
    _p("SIEMENS", "SWI", SequenceName="*fl2d1", ScanningSequence="GR", SequenceVariant=["SP", "OSP"], MRAcquisitionType="2D",
       RepetitionTime=650, EchoTime=20, FlipAngle=20),
    _p("SIEMENS", "LOCALIZER", SequenceName="*fl2d1", ScanningSequence="GR", SequenceVariant=["SP", "OSP"], MRAcquisitionType="2D",
       RepetitionTime=8.6, EchoTime=4.0, FlipAngle=20, three_plane=True),
    # --- GE ---
    _p("GE", "T1", ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "OSP"], ScanOptions=["FAST_GEMS", "IR_GEMS"],
       MRAcquisitionType="2D", RepetitionTime=2000, EchoTime=10, InversionTime=750, FlipAngle=111,
       private=((0x0019, 0x9C, _GE_ACQU, "LO", "fse-ir"),)),
    _p("GE", "T1", ScanningSequence="GR", SequenceVariant=["SS", "SK"], ScanOptions=["FAST_GEMS", "EDR_GEMS", "IR_GEMS"],
       MRAcquisitionType="3D", RepetitionTime=8.2, EchoTime=3.2, InversionTime=450, FlipAngle=12,
       private=((0x0019, 0x9C, _GE_ACQU, "LO", "efgre3d"),)),
    _p("GE", "T1C", ScanningSequence="GR", SequenceVariant=["SS", "SK"], ScanOptions=["FAST_GEMS", "EDR_GEMS", "IR_GEMS"],
       MRAcquisitionType="3D", RepetitionTime=8.2, EchoTime=3.2, InversionTime=450, FlipAngle=12, agent="MULTIHANCE",
       private=((0x0019, 0x9C, _GE_ACQU, "LO", "efgre3d"),)),
    _p("GE", "T1C", **_se(600, 10), SequenceVariant="SK", ScanOptions=["SAT_GEMS", "FILTERED_GEMS"], MRAcquisitionType="2D",
       agent="Dotarem"),
    _p("GE", "T2", **_se(5000, 100, flip=111), SequenceVariant="SK", ScanOptions=["FAST_GEMS", "TRF_GEMS"], MRAcquisitionType="2D",
       private=((0x0019, 0x9C, _GE_ACQU, "LO", "fse-xl"),)),
    _p("GE", "FLAIR", ScanningSequence=["SE", "IR"], SequenceVariant=["SK", "OSP"], ScanOptions=["FAST_GEMS", "IR_GEMS"],
       MRAcquisitionType="2D", RepetitionTime=9000, EchoTime=120, InversionTime=2200, FlipAngle=160),
    _p("GE", "PD", **_se(2500, 15, flip=111), SequenceVariant="SK", ScanOptions="FAST_GEMS", MRAcquisitionType="2D"),
    _p("GE", "DWI", ScanningSequence="EP", SequenceVariant="NONE", ScanOptions=["EPI_GEMS", "ACC_GEMS"], MRAcquisitionType="2D",
       RepetitionTime=7000, EchoTime=80, FlipAngle=90, ImageType=["ORIGINAL", "PRIMARY", "OTHER"],
       private=((0x0019, 0x9C, _GE_ACQU, "LO", "epi2"),), b_values=(1000,)),
    _p("GE", "ADC", ScanningSequence="EP", SequenceVariant="NONE", ScanOptions=["EPI_GEMS"], MRAcquisitionType="2D",
       RepetitionTime=7000, EchoTime=80, FlipAngle=90, ImageType=["DERIVED", "SECONDARY", "OTHER"]),
    _p("GE", "SWI", ScanningSequence="GR", SequenceVariant=["SS", "SP"], ScanOptions=["EDR_GEMS"], MRAcquisitionType="3D",
       RepetitionTime=40, EchoTime=25, FlipAngle=15, private=((0x0019, 0x9C, _GE_ACQU, "LO", "swan"),)),
    _p("GE", "LOCALIZER", ScanningSequence="GR", SequenceVariant="SS", ScanOptions="FAST_GEMS", MRAcquisitionType="2D",
       RepetitionTime=5.0, EchoTime=1.5, FlipAngle=30, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], three_plane=True,
       private=((0x0019, 0x9C, _GE_ACQU, "LO", "3-Plane"),)),
    # --- Philips ---
    _p("PHILIPS", "T1", ScanningSequence="GR", SequenceVariant=["SP", "MP"], ScanOptions="OTHER", MRAcquisitionType="3D",
       RepetitionTime=8.1, EchoTime=3.7, FlipAngle=8, ImageType=["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"],
       private=((0x2001, 0x03, _PHILIPS, "FL", 0.0),)),
    _p("PHILIPS", "T1", **_se(550, 15), SequenceVariant="SK", MRAcquisitionType="2D",
       ImageType=["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"], private=((0x2001, 0x03, _PHILIPS, "FL", 0.0),)),
    _p("PHILIPS", "T1C", ScanningSequence="GR", SequenceVariant=["SP", "MP"], ScanOptions="OTHER", MRAcquisitionType="3D",
       RepetitionTime=8.1, EchoTime=3.7, FlipAngle=8, ImageType=["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"], agent="Gadobutrol"),
    _p("PHILIPS", "T2", **_se(3000, 80), SequenceVariant="SK", MRAcquisitionType="2D",
       ImageType=["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"], private=((0x2001, 0x03, _PHILIPS, "FL", 0.0),)),
    _p("PHILIPS", "FLAIR", ScanningSequence="IR", SequenceVariant="SK", ScanOptions="FS", MRAcquisitionType="2D",
       RepetitionTime=11000, EchoTime=125, InversionTime=2800, FlipAngle=90,
       ImageType=["ORIGINAL", "PRIMARY", "M_IR", "M", "IR"]),
    _p("PHILIPS", "PD", **_se(2500, 14), SequenceVariant="SK", MRAcquisitionType="2D",
       ImageType=["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"]),
    _p("PHILIPS", "DWI", ScanningSequence="SE", SequenceVariant="SK", ScanOptions="FS", MRAcquisitionType="2D",
       RepetitionTime=3000, EchoTime=75, FlipAngle=90, ImageType=["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"],
       EchoPulseSequence=None, b_values=(0, 1000), private=()),
    _p("PHILIPS", "ADC", ScanningSequence="SE", SequenceVariant="SK", MRAcquisitionType="2D", RepetitionTime=3000, EchoTime=75,
       FlipAngle=90, ImageType=["DERIVED", "PRIMARY", "ADC", "ADC"]),
    _p("PHILIPS", "SWI", ScanningSequence="GR", SequenceVariant="SP", MRAcquisitionType="3D", RepetitionTime=31, EchoTime=7.2,
       FlipAngle=17, ImageType=["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"]),
    _p("PHILIPS", "LOCALIZER", ScanningSequence="GR", SequenceVariant="SP", MRAcquisitionType="2D", RepetitionTime=11,
       EchoTime=4.6, FlipAngle=15, ImageType=["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"], three_plane=True),
    # --- Canon / Toshiba ---
    _p("CANON", "T2", **_se(4500, 95), SequenceVariant="SK", MRAcquisitionType="2D"),
    _p("CANON", "FLAIR", ScanningSequence=["SE", "IR"], SequenceVariant="SK", MRAcquisitionType="2D", RepetitionTime=10000,
       EchoTime=100, InversionTime=2400, FlipAngle=90),
    _p("CANON", "T1", **_se(500, 12), SequenceVariant="NONE", MRAcquisitionType="2D"),
    _p("CANON", "DWI", ScanningSequence="EP", SequenceVariant="SK", MRAcquisitionType="2D", RepetitionTime=5000, EchoTime=90,
       FlipAngle=90, b_values=(1000,)),
    # --- other kinds of series (expected OTHER) ---
    _p("SIEMENS", "OTHER", SequenceName="*fl3d1r_t70", ScanningSequence="GR", SequenceVariant=["SP", "OSP"], MRAcquisitionType="3D",
       RepetitionTime=22, EchoTime=3.7, FlipAngle=18, ImageType=["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]),
    _p("SIEMENS", "OTHER", SequenceName="epfid2d1_64", ScanningSequence="EP", SequenceVariant="SK", MRAcquisitionType="2D",
       RepetitionTime=2000, EchoTime=30, FlipAngle=78),
    _p("GE", "OTHER", ScanningSequence="EP", SequenceVariant="NONE", MRAcquisitionType="2D", RepetitionTime=7000, EchoTime=80,
       FlipAngle=90, ImageType=["DERIVED", "PRIMARY", "EADC"]),
    _p("SIEMENS", "OTHER", SequenceName="*ep_b0_1000", ScanningSequence="EP", SequenceVariant=["SK", "SP"], MRAcquisitionType="2D",
       RepetitionTime=6000, EchoTime=89, FlipAngle=90, ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "FA", "ND", "NORM"]),
)

#: Descriptions per label: (text, "keyword-only contrast" flag). Many languages.
DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "T1": ("t1_mprage_sag_p2_iso", "Sag T1 FLAIR", "T1W_3D_TFE", "Ax BRAVO", "T1 nativ tra", "T1 axial sin contraste",
           "T1 sans injection", "T1 pre", "T1 senza mdc", "T1 zonder contrast", "T1 sem contraste", "T1 uten kontrast",
           "T1WI", "3D T1 SPGR", "t1_se_tra"),
    "T1C": ("T1 +C", "t1_mprage_sag_KM", "T1 mit KM", "T1 post Gd", "T1 avec injection", "T1 con contraste", "T1 con mdc",
            "T1 met contrast", "T1 com contraste", "T1 med kontrast", "T1WI zouei", "Ax T1 C+", "3D T1 TFE +C", "T1 CE",
            "t1_mprage_sag"),
    "T2": ("t2_tse_tra_p2", "Ax T2 FSE", "T2W_TSE", "T2 gewichtet tra", "T2 axial", "T2 ponderee", "T2 ponderada", "T2WI",
           "t2_blade_tra", "Ax T2 PROPELLER", "T2 cor"),
    "FLAIR": ("t2_tirm_tra_dark-fluid", "Ax T2 FLAIR", "T2W_FLAIR", "3D_Brain_VIEW_FLAIR", "FLAIR tra", "Sag CUBE FLAIR",
              "t2_space_dark-fluid_sag_p2_iso", "FLAIR axial", "FLAIR coronal"),
    "PD": ("pd_tse_cor", "Ax PD FSE", "PDW_TSE", "DP tra", "Densidad protonica", "Protonendichte tra"),
    "DWI": ("ep2d_diff_3scan_trace_p2_TRACEW", "Ax DWI 1000b", "DWI_SSh", "Diffusion", "Diffusion axiale", "Difusion",
            "Diffusione", "Diffusie", "Difusao", "Diffusjon", "Kakusan", "DWI b1000"),
    "ADC": ("ep2d_diff_3scan_trace_p2_ADC", "ADC (10^-6 mm2/s)", "DWI_SSh_ADC", "dADC", "ADC map", "Apparent Diffusion Coefficient"),
    "SWI": ("SWI_Images", "Ax SWAN", "SWIp", "t2_fl2d_tra_hemo", "T2* tra", "VEN_BOLD", "Suszeptibilitaet"),
    "LOCALIZER": ("localizer", "AAHead_Scout_32ch-head-coil", "3 Plane Loc", "SURVEY", "Localizador", "Localisateur", "Uebersicht"),
    "OTHER": ("TOF_3D_multi-slab", "ep2d_bold_rest", "eADC", "ep2d_diff_FA", "tof_fl3d_tra", "ep2d_pasl"),
}

#: Descriptions whose expected label is OTHER but that only fit one OTHER protocol.
_OTHER_FOR = {
    "*fl3d1r_t70": ("TOF_3D_multi-slab", "tof_fl3d_tra"),
    "epfid2d1_64": ("ep2d_bold_rest", "ep2d_pasl"),
    "EADC": ("eADC",),
    "FA": ("ep2d_diff_FA",),
}

_KEYWORD_ONLY_CONTRAST = {"T1 +C", "T1 mit KM", "T1 post Gd", "T1 avec injection", "T1 con contraste", "T1 con mdc",
                          "T1 met contrast", "T1 com contraste", "T1 med kontrast", "T1WI zouei", "Ax T1 C+", "3D T1 TFE +C", "T1 CE"}


def make_series(protocol: Protocol, description: str, *, seed: int, n: int = 3, with_agent: bool = True) -> list[Dataset]:
    """Build the header datasets of one series.

    Parameters
    ----------
    protocol : Protocol
        Acquisition parameters.
    description : str
        SeriesDescription and ProtocolName.
    seed : int
        Makes UIDs unique and deterministic.
    n : int
        Instances per b-value (three-plane localizers: ``n`` per plane).
    with_agent : bool
        Write ContrastBolusAgent when the protocol has one.

    Returns
    -------
    list of pydicom.Dataset
        Headers without pixel data.
    """
    series_uid = generate_uid(entropy_srcs=[f"series-{seed}-{description}-{protocol.vendor}"])
    out: list[Dataset] = []
    planes = [AX, SAG, COR] if protocol.three_plane else [AX]
    b_values: tuple[float | None, ...] = protocol.b_values or (None,)
    for idx, (plane, b, k) in enumerate(itertools.product(planes, b_values, range(n))):
        ds = Dataset()
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(idx)])
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "MR"
        ds.Manufacturer = _MANUFACTURER[protocol.vendor]
        ds.SeriesDescription = description
        ds.ProtocolName = description
        ds.SeriesNumber = seed % 100 + 1
        ds.InstanceNumber = idx + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        for key, value in protocol.tags.items():
            if value is not None:
                setattr(ds, key, value)
        ds.ImageOrientationPatient = plane
        ds.ImagePositionPatient = [0.0, 0.0, float(k) * 5.0]
        if protocol.agent and with_agent:
            ds.ContrastBolusAgent = protocol.agent
        for group, offset, creator, vr, value in protocol.private:
            ds.private_block(group, creator, create=True).add_new(offset, vr, value)
        if b is not None:
            if protocol.vendor == "SIEMENS":
                ds.private_block(0x0019, _SIEMENS_HDR, create=True).add_new(0x0C, "IS", int(b))
            elif protocol.vendor == "GE":
                ds.private_block(0x0043, _GE_PARM, create=True).add_new(0x39, "IS", [int(b) + 1_000_000_000, 8, 0, 0])
            elif protocol.vendor == "PHILIPS":
                ds.private_block(0x2001, _PHILIPS, create=True).add_new(0x03, "FL", float(b))
                ds.DiffusionBValue = float(b)
            else:
                ds.DiffusionBValue = float(b)
        out.append(ds)
    return out


def build_corpus() -> list[StyledSeries]:
    """Every protocol × every description of its label (OTHER: the matching ones).

    Returns
    -------
    list of StyledSeries
        About three hundred series.
    """
    corpus: list[StyledSeries] = []
    seed = 0
    for protocol in PROTOCOLS:
        if protocol.label == "OTHER":
            key = protocol.tags.get("SequenceName") or protocol.tags.get("ImageType", ["", "", ""])[2]
            descriptions: tuple[str, ...] = _OTHER_FOR.get(str(key), ())
        else:
            descriptions = DESCRIPTIONS[protocol.label]
        for description in descriptions:
            seed += 1
            keyword_only = protocol.label == "T1C" and description in _KEYWORD_ONLY_CONTRAST and seed % 2 == 0
            headers = make_series(protocol, description, seed=seed, with_agent=not keyword_only)
            corpus.append(StyledSeries(protocol.label, protocol.vendor, description, headers, keyword_only))
    return corpus


#: Attributes removed by :func:`strip_descriptive` (descriptions, sequence and protocol names).
STRIPPED = DESCRIPTIVE_KEYWORDS
