"""SeriesDescription / ProtocolName / sequence-name vocabulary.

Descriptions are written by people in many languages and by vendors in their own
abbreviations. Each :class:`Term` is a regular expression over a normalised text (upper
case, accents removed, separators turned into spaces). Terms are tried in order; a match
consumes its span, so compound terms ("T1 FLAIR" is a T1-weighted sequence, "T2*" is not
T2) are listed before the simple ones they contain.

Languages covered: English, German, French, Spanish, Italian, Dutch, Portuguese,
Danish/Norwegian/Swedish and romanised Japanese, plus the vendor names of Siemens
(MPRAGE, SPACE, TIRM, DARK-FLUID, VIBE, TRACEW, BLADE, MEDIC), GE (BRAVO, CUBE, SPGR,
LAVA, SWAN, PROPELLER, FIESTA, eADC), Philips (TFE, TSE, FFE, THRIVE, VIEW, SWIp, SURVEY,
VEN_BOLD, DRIVE) and Canon/Hitachi (FASE, MPRAGE).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from dicom_node.sequences import SequenceLabel

__all__ = ["CONTRAST_POST", "CONTRAST_PRE", "IN_WORD_TERMS", "Term", "match_contrast", "match_terms", "normalise_text"]

L = SequenceLabel

#: Pseudo-labels for the contrast modifier (not sequence labels).
CONTRAST_POST = "post-contrast"
CONTRAST_PRE = "pre-contrast"


@dataclass(frozen=True)
class Term:
    """One vocabulary entry.

    Attributes
    ----------
    pattern : str
        A regular expression over the normalised text; ``\\b`` boundaries are added.
    label : SequenceLabel
        The label the term speaks for.
    weight : float
        Its strength in ``(0, 1)``.
    dominant : bool
        Whether it explains away other labels' non-dominant cues (see ``evidence.Cue``).
    name : str
        A short name for the evidence text.
    """

    pattern: str
    label: SequenceLabel
    weight: float
    dominant: bool = False
    name: str = ""


def _t(pattern: str, label: SequenceLabel, weight: float, dominant: bool = False, name: str = "") -> Term:
    return Term(pattern, label, weight, dominant, name or pattern)


#: The vocabulary, compound terms first.
TERMS: tuple[Term, ...] = (
    # --- quantitative maps, derived diffusion maps: not a weighting of their own ---
    _t(r"E ?ADC|EXP(ONENTIAL)? ?ADC|EXP(ONENTIAL)?", L.OTHER, 0.9, True, "eADC (exponential ADC)"),
    _t(r"COL ?FA|COLOU?R ?FA|FA|TENSOR|TRACE ?ADC ?FA|DTI ?MAP|MD MAP|NODDI", L.OTHER, 0.85, True, "diffusion tensor map"),
    _t(r"(Q|QUANT )?T[12] ?\*? ?MAP(PING)?|QT[12]|R2 ?\*|MOLLI|RELAXOMETR\w*|MAGIC|SYMRI|MDME|T1 ?MAP",
       L.OTHER, 0.9, True, "quantitative map"),
    # --- localizers and calibrations ---
    _t(r"ASSET ?CAL\w*|CAL(IBRATION)?|SENSE ?REF\w*|COIL ?SURVEY|REF ?SCAN|PRESCAN|NORMALI[SZ]E",
       L.OTHER, 0.85, True, "calibration scan"),
    _t(r"LOCALI[SZ]ER|LOCALI[SZ]ATEUR|LOCALIZADOR|LOCALIZZATORE|LOKALI[SZ]ER\w*|LOCALI[SZ]ING|"
       r"SCOUT|SURVEY|TRI ?PILOT|PILOT|3 ?PLANE|3 ?PL( LOC)?|TRIPLANE|REPERAGE|UEBERSICHT|UBERSICHT|"
       r"AA ?HEAD ?SCOUT|AUTO ?ALIGN|SCANOGRAM|LOC|OVERSIKT|OVERZICHT|POSITIONERING",
       L.LOCALIZER, 0.92, True, "localizer"),
    # --- other kinds of series ---
    _t(r"TOF|ANGIO\w*|MRA|MRV|VENOGRA\w*|PHASE ?CONTRAST|PC ?MRA|INHANCE|QFLOW|Q ?FLOW|FLOW",
       L.OTHER, 0.88, True, "angiography / flow"),
    _t(r"(?<!VEN )BOLD|FMRI|F MRI|RESTING( STATE)?|REST|EPFID|TASK|EP2D ?BOLD", L.OTHER, 0.85, True, "BOLD fMRI"),
    _t(r"P?C?ASL|PERFUSION|PERF|DSC|DCE|PWI|CBF|RCBV|REL ?CBV|REL ?CBF|CBV|MTT|TTP|TMAX|PERFUSIE|PERFUSAO",
       L.OTHER, 0.88, True, "perfusion"),
    _t(r"SPECTRO\w*|SVS|CSI|MRS|PRESS|STEAM|SPECTROSCOP\w*", L.OTHER, 0.9, True, "spectroscopy"),
    _t(r"FIELD ?MAP|B0 ?MAP|B1 ?MAP|GRE ?FIELD ?MAP(PING)?|SHIM", L.OTHER, 0.9, True, "field map"),
    _t(r"CISS|FIESTA|TRUFI|TRUE ?FISP|B ?FFE|BALANCED", L.OTHER, 0.75, False, "balanced SSFP"),
    _t(r"MIP|MIP ?RANGE|PROJECTION", L.OTHER, 0.6, False, "maximum-intensity projection"),
    _t(r"STIR|DIR|PSIR|DOUBLE ?IR|MRCP|DIXON ?FAT|FAT ?ONLY|SUB(TRACTION)?|SUBTR", L.OTHER, 0.7, False, "other contrast"),
    # --- T1-weighted inversion recovery is T1, not FLAIR ---
    _t(r"T1 ?W? ?FLAIR|FLAIR ?T1|T1 ?TIRM|TIRM ?T1|T1 ?IR", L.T1, 0.9, False, "T1 FLAIR / T1 IR"),
    # --- T2* / susceptibility before T2 ---
    _t(r"T2 ?\*|T2 ?STAR|T2STAR|T2 ?FFE|FFE ?T2|SWI\w*|SWAN|SWIP|VEN ?BOLD|MNIP|MIN ?IP|"
       r"SUSC?EPTIBIL\w*|SUSZEPTIBIL\w*|SUSCETTIBIL\w*|HEMO\w*|HAEMO\w*|HEMOSIDERIN|BLEED|"
       r"MEDIC|MERGE|PHA ?IMAGES|MAG ?IMAGES|SWI ?MIP",
       L.SWI, 0.88, False, "susceptibility / T2*"),
    _t(r"GRE|T2 ?GRE|GRE ?T2|FFE", L.SWI, 0.45, False, "gradient echo"),
    # --- FLAIR ---
    _t(r"(T2 ?W? ?)?FLAIR( T2)?|DARK ?FLUID|FLUID ?ATTENUATED|TIRM|T2 ?TIRM|SPACE ?FLAIR|CUBE ?FLAIR|"
       r"FLAIR ?CUBE|FLAIR ?SPACE|VISTA ?FLAIR|FLAIR ?VISTA",
       L.FLAIR, 0.9, False, "FLAIR"),
    # --- diffusion ---
    _t(r"D ?ADC|ADC|APPARENT ?DIFFUSION( COEFFICIENT)?|ADC ?MAP|DWI ?ADC|ADC ?DWI|DIFF ?ADC|ADC ?10\w*",
       L.ADC, 0.92, True, "ADC"),
    _t(r"D ?DWI\w*|DWI\w*|DW|DWIBS|DIFF\w*|DIFUS\w*|DIFFUSIE|DIFFUSJON|DIFFUSIONE|KAKUSAN|TRACE ?W?|TRACEW|ISO ?DWI|"
       r"ISOTROPIC|B ?\d{3,4}|DTI|RESOLVE|EP2D ?DIFF|DWISE|DW ?SSH|ZOOMIT ?DWI",
       L.DWI, 0.88, False, "diffusion"),
    # --- proton density ---
    _t(r"PD ?W?I?|PD ?FS|PD ?SPAIR|PROTON ?DENSITY|PROTONENDICHTE|DP|DENSITE ?PROTON\w*|DENSIDAD ?PROTON\w*|"
       r"DENSITA ?PROTON\w*|DENSIDADE ?PROTON\w*|PROTONDICHTHEID|PROTONTETTHET|PD ?TSE|TSE ?PD",
       L.PD, 0.85, False, "proton density"),
    # --- T2 ---
    _t(r"T2 ?W?I?|T2 ?WEIGHTED|T2 ?GEWICHTET|PONDERE ?T2|PONDERADA ?T2|PONDERATA ?T2|GEWOGEN ?T2|"
       r"T2 ?TSE|TSE ?T2|T2 ?FSE|FSE ?T2|T2 ?SPACE|T2 ?CUBE|T2 ?BLADE|T2 ?PROPELLER|T2 ?DRIVE|T2 ?FASE",
       L.T2, 0.88, False, "T2-weighted"),
    _t(r"HASTE|SSFSE|SS ?FSE|SSH ?TSE|FASE", L.T2, 0.6, False, "single-shot T2"),
    _t(r"BLADE|PROPELLER|MULTIVANE|RADAR", L.T2, 0.4, False, "radial TSE"),
    _t(r"TSE|FSE|TURBO ?SPIN ?ECHO|FAST ?SPIN ?ECHO|RARE", L.T2, 0.3, False, "turbo spin echo"),
    # --- T1 ---
    _t(r"T1 ?W?I?|T1 ?WEIGHTED|T1 ?GEWICHTET|PONDERE ?T1|PONDERADA ?T1|PONDERATA ?T1|GEWOGEN ?T1|"
       r"T1 ?SE|SE ?T1|T1 ?TSE|T1 ?FSE|T1 ?TFE|T1 ?FFE|T1 ?3D|3D ?T1|T1 ?MPR|T1 ?SPACE|T1 ?CUBE|T1 ?VISTA|"
       r"T1 ?MPRAGE|T1 ?GRE",
       L.T1, 0.88, False, "T1-weighted"),
    _t(r"(ME ?)?MP ?RAGE|MP ?2 ?RAGE ?UNI|MPRAGE\w*|RAGE|BRAVO|IR ?FSPGR|FSPGR|SPGR|TFE|TFL|VIBE|STAR ?VIBE|"
       r"LAVA|THRIVE|3D ?GRE ?T1|FLASH|MPR ?T1|T1TFE|TIR ?FSPGR|IR ?SPGR",
       L.T1, 0.8, False, "T1 gradient-echo family (MPRAGE, BRAVO, SPGR, TFE, VIBE)"),
)

#: Distinctive vendor names that real descriptions run into other words ("mocoMEMPRAGE",
#: "AXT2FLAIR", "SAGIRFSPGR"): searched inside words, after the word-bounded vocabulary found
#: nothing. Compound names first, as in :data:`TERMS`.
IN_WORD_TERMS: tuple[Term, ...] = (
    _t(r"T1 ?FLAIR|T1 ?TIRM", L.T1, 0.8, False, "T1 FLAIR inside a word"),
    _t(r"ME ?MPRAGE|MP ?2 ?RAGE|MPRAGE|IR ?FSPGR|FSPGR|BRAVO", L.T1, 0.75, False, "MPRAGE/BRAVO/FSPGR inside a word"),
    _t(r"FLAIR|TIRM|DARKFLUID", L.FLAIR, 0.8, False, "FLAIR inside a word"),
)

#: Post-contrast and pre-contrast phrases (checked on every descriptive text).
_PRE = (
    r"OHNE ?(KM|KONTRAST\w*)|NATIV|NATIVE|NON ?CONTRAST|NO ?CONTRAST|WITHOUT ?(CONTRAST|GAD\w*)|PRE ?CONTRAST|"
    r"PRE ?GD|PRE ?GAD\w*|PRECONTRAST|PRE|PRAE|VOR ?KM|SIN ?(CONTRASTE|GAD\w*)|SANS ?(INJ\w*|GADO\w*|CONTRASTE)|"
    r"AVANT ?INJ\w*|SENZA ?(MDC|CONTRASTO)|PRE ?MDC|ZONDER ?(CONTRAST|GADO\w*)|SEM ?CONTRASTE|"
    r"UTEN ?KONTRAST|UTAN ?KONTRAST|UDEN ?KONTRAST|HI ?ZOUEI|TANJUN"
)
_POST = (
    r"\+ ?C|C ?\+|\+ ?GD|GD ?\+|\+ ?GAD\w*|\+ ?KM|KM ?\+|MIT ?(KM|KONTRAST\w*)|KM|KONTRAST\w*|GD|GAD|GADO\w*|"
    r"GADOLINI\w*|POST ?(CONTRAST|GD|GAD\w*|KM|INJ\w*|MDC)?|POSTCONTRAST|CE|CONTRAST|CON ?CONTRASTE|"
    r"CONTRASTE|CONTRASTO|MDC|CON ?MDC|AVEC ?(INJ\w*|GADO\w*|CONTRASTE)|INJ|INJECT\w*|MET ?CONTRAST|"
    r"COM ?CONTRASTE|MED ?KONTRAST|ZOUEI|ZOEI|ENHANCED|ENH|DOTAREM|GADOVIST|MAGNEVIST|PROHANCE|"
    r"MULTIHANCE|OMNISCAN|CLARISCAN|ELUCIREM|VUEWAY|DOTAGRAF|GADAVIST"
)

_SEPARATORS = re.compile(r"[_\-/\\.,;:()\[\]<>=#'\"]+")
_PLANE_PREFIX = re.compile(r"\b(AX|AXI|SAG|COR|TRA|TRANS|OBL)(?=(T[12]|PD|FLAIR|DWI|SWI|DW)\b)")
_SPACES = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Upper-case, strip accents and turn separators into single spaces.

    Parameters
    ----------
    text : str
        A description, protocol name or sequence name.

    Returns
    -------
    str
        The normalised text, e.g. ``"t2_tirm_tra_dark-fluid"`` → ``"T2 TIRM TRA DARK FLUID"``.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_text = "".join(c for c in decomposed if not unicodedata.combining(c)).upper()
    ascii_text = ascii_text.replace("Ä", "AE").replace("Ü", "UE").replace("Ö", "OE")
    out = _SEPARATORS.sub(" ", ascii_text)
    out = _PLANE_PREFIX.sub(r"\1 ", out)
    return _SPACES.sub(" ", out).strip()


@lru_cache(maxsize=1)
def _compiled() -> tuple[tuple[re.Pattern[str], Term], ...]:
    return tuple((re.compile(rf"(?<![A-Z0-9])(?:{t.pattern})(?![A-Z0-9])"), t) for t in TERMS)


@lru_cache(maxsize=1)
def _in_word_compiled() -> tuple[tuple[re.Pattern[str], Term], ...]:
    return tuple((re.compile(t.pattern), t) for t in IN_WORD_TERMS)


@lru_cache(maxsize=1)
def _contrast_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    def wrap(p: str) -> re.Pattern[str]:
        return re.compile(rf"(?<![A-Z0-9])(?:{p})(?![A-Z0-9])")

    return wrap(_PRE), wrap(_POST)


def match_terms(text: str) -> list[tuple[Term, str]]:
    """Find the vocabulary terms in a text.

    Parameters
    ----------
    text : str
        A raw description (normalised here).

    Returns
    -------
    list of (Term, str)
        Each matching term with the matched words, in vocabulary order.
    """
    work = " " + normalise_text(text) + " "
    found, work = _consume(_compiled(), work)
    if not found:
        found, _ = _consume(_in_word_compiled(), work)
    return found


def _consume(patterns: tuple[tuple[re.Pattern[str], Term], ...], work: str) -> tuple[list[tuple[Term, str]], str]:
    """Match ``patterns`` in order, each match consuming its span; return the matches and what is left."""
    found: list[tuple[Term, str]] = []
    for regex, term in patterns:
        m = regex.search(work)
        if m is None:
            continue
        found.append((term, m.group(0).strip()))
        work = regex.sub(" ", work)
    return found, work


def match_contrast(text: str) -> list[tuple[str, str]]:
    """Find pre- and post-contrast phrases in a text.

    Parameters
    ----------
    text : str
        A raw description.

    Returns
    -------
    list of (str, str)
        ``(CONTRAST_PRE or CONTRAST_POST, matched words)``; pre phrases are consumed
        first so "sin contraste" never counts as post.
    """
    work = " " + normalise_text(text).replace("+", " + ") + " "
    work = _SPACES.sub(" ", work)
    pre, post = _contrast_patterns()
    out: list[tuple[str, str]] = []
    m = pre.search(work)
    if m:
        out.append((CONTRAST_PRE, m.group(0).strip()))
        work = pre.sub(" ", work)
    m = post.search(work)
    if m:
        out.append((CONTRAST_POST, m.group(0).strip()))
    return out
