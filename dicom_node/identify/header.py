"""Vendor-aware header rules: cues from the headers of one series, and the decision.

Every rule turns a header fact into a :class:`~dicom_node.identify.evidence.Cue` for one
label. :func:`decide` combines them: dominant cues (a localizer, an ADC map, an angiogram)
explain away the ordinary cues of other labels; cues of one label from the same family
count once (the strongest), families combine by noisy-OR; the confidence is the top
label's support times one minus the runner-up's, so conflicting evidence lowers it.
Post-contrast is a modifier of T1: ``T1`` becomes ``T1C`` when the contrast evidence
says so, and conflicting contrast evidence lowers the confidence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from dicom_node.identify.evidence import DEFAULT_THRESHOLD, Cue, Identification
from dicom_node.identify.facts import HeaderFacts
from dicom_node.identify.keywords import CONTRAST_POST, match_contrast, match_terms
from dicom_node.sequences import SequenceLabel

__all__ = ["collect_cues", "contrast_decision", "decide", "has_contrast_agent", "label_scores"]

L = SequenceLabel

_EXPLICIT_FAMILIES = frozenset({"image_type", "keyword", "sequence_name", "scan_options"})

#: Specific label → the generic labels whose cues it explains away.
_EXPLAINS: dict[SequenceLabel, tuple[SequenceLabel, ...]] = {
    L.FLAIR: (L.T2,),
    L.SWI: (L.T2,),
    L.ADC: (L.DWI,),
}

_NEGATIVE_AGENT = {"NONE", "NO", "N", "0", "N/A", "NA", "-", "NIL", "NEIN", "NON", "KEIN", "KEINE"}

#: (ImageType / FrameType / AcquisitionContrast values, label, weight, dominant).
_IMAGE_TYPE_RULES: tuple[tuple[frozenset[str], SequenceLabel, float, bool], ...] = (
    (frozenset({"LOCALIZER", "SCOUT"}), L.LOCALIZER, 0.95, True),
    (frozenset({"ADC"}), L.ADC, 0.95, True),
    (frozenset({"EADC", "EXP", "EXPONENTIAL"}), L.OTHER, 0.92, True),
    (frozenset({"FA", "COLFA", "TENSOR", "TRACEW_FA", "MD"}), L.OTHER, 0.9, True),
    (frozenset({"TRACEW", "TRACE", "ISOTROPIC"}), L.DWI, 0.93, False),
    (frozenset({"DIFFUSION"}), L.DWI, 0.85, False),
    (frozenset({"SWI", "MNIP", "MIN IP"}), L.SWI, 0.9, True),
    (frozenset({"T2_STAR", "T2*"}), L.SWI, 0.85, False),
    (frozenset({"PROJECTION IMAGE", "MIP", "CSA MIP", "ANGIO", "TOF", "FLOW_ENCODED", "VELOCITY"}), L.OTHER, 0.85, True),
    (frozenset({"PERFUSION", "ASL", "CBF", "CBV", "RCBV", "MTT", "TTP", "TMAX", "SPECTROSCOPY", "FMRI"}), L.OTHER, 0.9, True),
    (frozenset({"SUBTRACTION", "SUB", "SUBTRACT", "T1 MAP", "T2 MAP", "T1MAP", "T2MAP", "R2STAR"}), L.OTHER, 0.85, True),
    (frozenset({"FLUID_ATTENUATED", "FLAIR"}), L.FLAIR, 0.88, False),
    (frozenset({"PROTON_DENSITY"}), L.PD, 0.85, False),
    (frozenset({"T1"}), L.T1, 0.85, False),
    (frozenset({"T2"}), L.T2, 0.85, False),
)

#: Siemens / GE / Philips sequence-name patterns (regex over the upper-case name).
_SEQUENCE_NAME_RULES: tuple[tuple[str, SequenceLabel, float, bool, str], ...] = (
    (r"^\*?EP_B\d", L.DWI, 0.9, False, "Siemens diffusion EPI"),
    (r"^\*?(RE|EP)_?B\d|^\*?EP2D_?DIFF|^\*?EP.*_B\d|DWI|DIFF", L.DWI, 0.85, False, "diffusion EPI"),
    (r"^\*?EPFID|^\*?EPI?_?RT|^\*?EPI?BOLD|BOLD", L.OTHER, 0.85, True, "gradient-echo EPI (BOLD)"),
    (r"^\*?(EPSE|EP2D_?PERF|EPI?_?PERF)|PERF|ASL|PCASL", L.OTHER, 0.75, True, "perfusion EPI"),
    (r"^\*?SWI|SWAN|SWIP|VEN_?BOLD", L.SWI, 0.92, True, "susceptibility-weighted"),
    (r"^\*?ME[23]D|MEDIC|MERGE", L.SWI, 0.75, False, "multi-echo gradient echo"),
    (r"^\*?FL[23]D\d*R?_T\d|^\*?FL3D\d+R?_T|TOF|^\*?FL[23]D\w*_?VE|^\*?FL_?PC|^\*?FL3D_?PC", L.OTHER, 0.85, True, "time-of-flight / phase-contrast"),
    (r"^\*?SPCIR|^\*?SPCIRR|CUBE_?FLAIR|FLAIR", L.FLAIR, 0.75, False, "inversion-recovery SPACE/CUBE (FLAIR family)"),
    # Siemens *tir2d/*tir3d is any inversion-recovery TSE (FLAIR, STIR, T1-FLAIR): TI and TE decide
    (r"^\*?TIR[23]D", L.OTHER, 0.0, False, "inversion-recovery TSE (FLAIR, STIR or T1-FLAIR: TI decides)"),
    (r"^\*?FL3D\d*(_?NS)?$", L.T1, 0.7, False, "3D spoiled gradient echo (FLASH/VIBE), T1-weighted"),
    (r"^\*?TFL[23]D|^\*?TFL|MPRAGE|T1TFE|EFGRE3D|BRAVO|IR_?FSPGR|FSPGR|SPGR", L.T1, 0.8, False, "T1 gradient echo (MPRAGE/BRAVO/SPGR/TFE)"),
    (r"^\*?TFI|^\*?CI3D|FIESTA|TRUFI|BFFE", L.OTHER, 0.7, False, "balanced SSFP"),
    (r"^\*?FM2D|^\*?FM3D|FIELDMAP", L.OTHER, 0.85, True, "field map"),
    (r"^\*?SPC[23]D|^\*?SPC_|^\*?SPCR", L.T2, 0.45, False, "SPACE (mostly T2)"),
    (r"3[ -]?PLANE|3PL|SCOUT|LOCALI", L.LOCALIZER, 0.9, True, "localizer pulse sequence"),
    (r"^T2TSE|^T2_?TSE|^T2FSE", L.T2, 0.85, False, "T2 TSE"),
    (r"^T1SE|^T1_?SE|^T1TSE|^T1FSE|^T1FFE", L.T1, 0.85, False, "T1 SE/FFE"),
    (r"^PDTSE|^PD_?TSE|^PDW", L.PD, 0.85, False, "PD TSE"),
)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _text_cues(facts: HeaderFacts) -> list[Cue]:
    cues: list[Cue] = []
    for name, value in facts.texts:
        for term, words in match_terms(value):
            cues.append(Cue(term.label, term.weight, f"{name} says {words!r} ({term.name})", "keyword", term.dominant))
    for value in facts.sequence_names:
        matched = False
        for pattern, label, weight, dominant, text in _SEQUENCE_NAME_RULES:
            if re.search(pattern, value):
                if weight > 0:
                    cues.append(Cue(label, weight, f"sequence name {value!r}: {text}", "sequence_name", dominant))
                matched = True
                break
        if not matched:
            for term, words in match_terms(value):
                if term.weight >= 0.5:  # weak terms (TSE, GRE) say little inside a sequence name
                    cues.append(Cue(term.label, term.weight * 0.9, f"sequence name {value!r} has {words!r}", "sequence_name", term.dominant))
    return cues


def _image_type_cues(facts: HeaderFacts) -> list[Cue]:
    cues: list[Cue] = []
    values = facts.image_type | facts.acquisition_contrast
    for keys, label, weight, dominant in _IMAGE_TYPE_RULES:
        hit = sorted(keys & values)
        if hit:
            cues.append(Cue(label, weight, f"ImageType/AcquisitionContrast has {hit[0]}", "image_type", dominant))
    return cues


def _diffusion_cues(facts: HeaderFacts) -> list[Cue]:
    cues: list[Cue] = []
    bs = sorted(facts.b_values)
    is_epi = "EP" in facts.scanning_sequence or "EPI" in facts.echo_pulse_sequence
    if bs and bs[-1] >= 50:
        text = "b-values " + ", ".join(f"{b:g}" for b in bs)
        cues.append(Cue(L.DWI, 0.9, f"{text} s/mm²", "b_value"))
    elif bs and is_epi and ("DIFFUSION" in facts.image_type or len(facts.b_values) > 1):
        cues.append(Cue(L.DWI, 0.6, "b-value 0 on a diffusion EPI series", "b_value"))
    return cues


def _ir_flags(facts: HeaderFacts) -> tuple[bool, str]:
    """Whether the series is inversion-prepared, and the header fact that says so."""
    if "IR" in facts.scanning_sequence:
        return True, "ScanningSequence IR"
    if facts.inversion_recovery is True:
        return True, "InversionRecovery YES"
    if "IR" in facts.scan_options or "IR_GEMS" in facts.scan_options:
        return True, "ScanOptions IR"
    if facts.ti is not None and facts.ti > 0:
        return True, "InversionTime"
    return False, ""


def _scan_option_cues(facts: HeaderFacts) -> list[Cue]:
    """GE writes the FLAIR flavour into ScanOptions (``T2FLAIR_GEMS``, ``T1FLAIR_GEMS``); Siemens
    and others mark time-of-flight angiography in SequenceVariant (``TOF``)."""
    cues: list[Cue] = []
    if "TOF" in facts.sequence_variant:
        cues.append(Cue(L.OTHER, 0.9, "SequenceVariant has TOF (time-of-flight angiography)", "scan_options", True))
    opts = facts.scan_options
    if "T2FLAIR_GEMS" in opts or "FLAIR_GEMS" in opts:
        cues.append(Cue(L.FLAIR, 0.85, "ScanOptions has T2FLAIR_GEMS", "scan_options"))
    if "T1FLAIR_GEMS" in opts:
        cues.append(Cue(L.T1, 0.85, "ScanOptions has T1FLAIR_GEMS", "scan_options"))
    return cues


def _physics_cues(facts: HeaderFacts) -> list[Cue]:
    """Weighting from TR, TE, TI, flip angle and the sequence type (ms, degrees).

    Real scanners write the sequence type as multi-valued codes (ScanningSequence
    ``GR\\IR``, SequenceVariant ``SP\\MP``) and often leave InversionTime out (Siemens
    MPRAGE/MEMPRAGE exports) or at 0: an inversion-prepared 3D gradient echo with a short
    TE is the MPRAGE/IR-FSPGR/BRAVO/TFE family (T1) whatever its TI; a magnetisation-prepared
    (``MP``) gradient echo too. Without TI an inversion-prepared spin echo is only weak
    evidence (FLAIR, STIR and T1-FLAIR share it). Long-TR long-TE spin echo without any
    inversion fact is T2 only as far as FLAIR is excluded: where a 2D TR of 8 s or more, or
    a 3D TR of 4.5 s or more, could also be a FLAIR whose inversion the header does not
    record, both are said and the confidence stays low.
    """
    tr, te, ti, flip = facts.tr, facts.te, facts.ti, facts.flip
    ss = facts.scanning_sequence
    params = f"TR {_fmt(tr)}, TE {_fmt(te)}, TI {_fmt(ti)}, flip {_fmt(flip)}"
    if tr is None or te is None:
        return []
    is_epi = "EP" in ss or "EPI" in facts.echo_pulse_sequence
    is_gre = ("GR" in ss or facts.echo_pulse_sequence == "GRADIENT") and "SE" not in ss
    is_ir, ir_fact = _ir_flags(facts)
    is_mp = "MP" in facts.sequence_variant
    is_3d = facts.acquisition_type == "3D"
    cues: list[Cue] = []
    if is_epi:
        if not facts.b_values and "DIFFUSION" not in facts.image_type and te < 50:
            cues.append(Cue(L.OTHER, 0.55, f"gradient-echo EPI with short TE ({params}): BOLD/perfusion-like", "physics"))
        elif te >= 50:
            cues.append(Cue(L.DWI, 0.45, f"spin-echo EPI with long TE ({params})", "physics"))
        return cues
    if is_gre and (is_ir or is_mp) and te < 10:
        if ti is not None and ti < 300:
            cues.append(Cue(L.OTHER, 0.55, f"gradient echo with a short inversion ({params})", "physics"))
        else:
            why = ir_fact if is_ir else "SequenceVariant MP"
            shape = "3D " if is_3d else ""
            cues.append(Cue(L.T1, 0.78 if is_3d else 0.72,
                            f"inversion/magnetisation-prepared {shape}gradient echo with short TE, MPRAGE/BRAVO/TFE family ({why}; {params})",
                            "physics"))
        return cues
    if is_ir and ti is not None:
        if 1500 <= ti <= 3200 and (tr >= 4000 or te >= 70):
            cues.append(Cue(L.FLAIR, 0.82, f"inversion recovery with fluid-nulling TI ({params})", "physics"))
        elif 300 <= ti <= 1400 and te <= 30 and tr <= 3500:
            cues.append(Cue(L.T1, 0.78, f"T1-weighted inversion recovery ({params})", "physics"))
        elif ti < 300:
            cues.append(Cue(L.OTHER, 0.6, f"short-TI inversion recovery, fat-suppressed ({params})", "physics"))
        return cues
    if is_ir:
        # inversion-prepared spin echo without a usable TI: FLAIR, STIR or T1-FLAIR
        if te >= 70 and tr >= 4000:
            cues.append(Cue(L.FLAIR, 0.5, f"inversion-prepared spin echo with long TR and TE, no TI recorded ({ir_fact}; {params})", "physics"))
        elif te <= 30 and tr <= 3500:
            cues.append(Cue(L.T1, 0.5, f"inversion-prepared spin echo with short TE, no TI recorded ({ir_fact}; {params})", "physics"))
        return cues
    if is_gre:
        if te >= 15 and (flip is None or flip <= 40):
            cues.append(Cue(L.SWI, 0.72, f"gradient echo with long TE, T2*-weighted ({params})", "physics"))
        elif te >= 12 and (flip is None or flip <= 40):
            # 12-15 ms is also a fast pilot's or a 1.5 T in-phase echo: weak on its own
            cues.append(Cue(L.SWI, 0.5, f"gradient echo with moderately long TE ({params})", "physics"))
        elif te < 10 and tr < 400 and (flip is None or flip >= 6):
            cues.append(Cue(L.T1, 0.6, f"spoiled gradient echo with short TE, T1-weighted ({params})", "physics"))
        elif te < 10 and is_3d and 1000 <= tr <= 3500 and flip is not None and flip <= 15:
            cues.append(Cue(L.T1, 0.55, f"3D gradient echo with MPRAGE-like TR and flip, no inversion recorded ({params})", "physics"))
        return cues
    # spin echo / turbo spin echo
    if tr <= 900 and te <= 30:
        cues.append(Cue(L.T1, 0.75, f"spin echo with short TR and short TE, T1-weighted ({params})", "physics"))
    elif tr >= 1800 and te >= 70:
        if (is_3d and tr >= 4500) or (not is_3d and tr >= 8000):
            cues.append(Cue(L.T2, 0.6, f"spin echo with long TR and long TE ({params})", "physics"))
            cues.append(Cue(L.FLAIR, 0.35, f"TR {_fmt(tr)} ms is also a FLAIR's, and nothing says there is no inversion", "physics"))
        else:
            cues.append(Cue(L.T2, 0.78, f"spin echo with long TR and long TE, T2-weighted ({params})", "physics"))
    elif tr >= 1800 and te <= 40:
        cues.append(Cue(L.PD, 0.7, f"spin echo with long TR and short TE, PD-weighted ({params})", "physics"))
    return cues


#: ImageType values of derived views whose frames legitimately face many ways (radial MIPs, reformats).
_MULTI_VIEW_DERIVED = frozenset({"PROJECTION IMAGE", "MIP", "CSA MIP", "MPR", "CSA MPR", "REFORMATTED", "RADIAL"})


def _geometry_cues(facts: HeaderFacts) -> list[Cue]:
    if facts.image_type & _MULTI_VIEW_DERIVED:
        return []  # projections at several angles are not a localizer
    if facts.n_orientations >= 2 and not facts.enhanced:
        return [Cue(L.LOCALIZER, 0.9, f"{facts.n_orientations} slice orientations in one series", "geometry", True)]
    if facts.n_orientations >= 3 and facts.enhanced:
        return [Cue(L.LOCALIZER, 0.8, f"{facts.n_orientations} frame orientations in one series", "geometry", True)]
    return []


def has_contrast_agent(agent: str) -> bool:
    """Whether a ContrastBolusAgent value names an agent (not empty, "NONE", "NO", ...).

    Parameters
    ----------
    agent : str
        The (0018,0010) value.

    Returns
    -------
    bool
        True when an agent is recorded.
    """
    value = agent.strip().upper()
    return bool(value) and value not in _NEGATIVE_AGENT


def _contrast_cues(facts: HeaderFacts) -> list[Cue]:
    cues: list[Cue] = []
    if has_contrast_agent(facts.contrast_agent):
        cues.append(Cue(L.T1C, 0.9, "ContrastBolusAgent is recorded", "contrast"))
    elif facts.contrast_agent.strip().upper() in _NEGATIVE_AGENT and facts.contrast_agent.strip():
        cues.append(Cue(L.T1, 0.8, f"ContrastBolusAgent says {facts.contrast_agent.strip()!r} (no agent)", "contrast"))
    for name, value in facts.texts:
        for kind, words in match_contrast(value):
            label = L.T1C if kind == CONTRAST_POST else L.T1
            cues.append(Cue(label, 0.85, f"{name} says {words!r} ({kind})", "contrast_text"))
    return cues


def collect_cues(facts: HeaderFacts) -> tuple[list[Cue], list[Cue]]:
    """Return the label cues and the contrast cues for one series.

    Parameters
    ----------
    facts : HeaderFacts
        The series' facts.

    Returns
    -------
    (list of Cue, list of Cue)
        Label cues, and contrast cues (label ``T1C`` for post, ``T1`` for pre).
    """
    cues = _image_type_cues(facts) + _text_cues(facts) + _diffusion_cues(facts)
    cues += _scan_option_cues(facts) + _physics_cues(facts) + _geometry_cues(facts)
    return cues, _contrast_cues(facts)


def _noisy_or(weights: Sequence[float]) -> float:
    p = 1.0
    for w in weights:
        p *= 1.0 - w
    return 1.0 - p


def label_scores(cues: Sequence[Cue]) -> tuple[dict[SequenceLabel, float], list[Cue]]:
    """Combine cues into per-label support, applying dominance.

    Parameters
    ----------
    cues : sequence of Cue
        The label cues.

    Returns
    -------
    (dict, list of Cue)
        Support per label in ``[0, 1]`` and the cues that were kept.
    """
    dominant = {c.label for c in cues if c.dominant}
    kept = [c for c in cues if c.dominant or not dominant or c.label in dominant]
    # A FLAIR is a T2-weighted sequence, an SWI a long-TE gradient echo, an ADC map is
    # computed from a diffusion series: a clear statement of the specific label explains
    # away the generic one.
    specific = {c.label for c in kept if c.family in _EXPLICIT_FAMILIES and c.weight >= 0.85}
    explained = {g for label in specific for g in _EXPLAINS.get(label, ())}
    kept = [c for c in kept if c.label not in explained]
    # A weak generic term ("TSE", "GRE") says nothing against a clear term of another label.
    kept = [
        c for c in kept
        if not (c.family in _EXPLICIT_FAMILIES and c.weight < 0.5 and specific - {c.label})
    ]
    # Physics is indirect evidence: an explicit statement (ImageType, a description term,
    # a sequence name) of at least 0.85 for another label halves a physics cue's weight.
    explicit = {c.label for c in kept if c.family in _EXPLICIT_FAMILIES and c.weight >= 0.85}
    kept = [
        replace(c, weight=c.weight * 0.5, text=c.text + " [outweighed by an explicit statement]")
        if c.family == "physics" and explicit and c.label not in explicit
        else c
        for c in kept
    ]
    best: dict[tuple[SequenceLabel, str], float] = {}
    for c in kept:
        key = (c.label, c.family)
        best[key] = max(best.get(key, 0.0), c.weight)
    per_label: dict[SequenceLabel, list[float]] = {}
    for (label, _family), w in best.items():
        per_label.setdefault(label, []).append(w)
    return {label: _noisy_or(ws) for label, ws in per_label.items()}, kept


def contrast_decision(
    contrast: Sequence[Cue], *, study_records_contrast: bool = False
) -> tuple[SequenceLabel, float, list[str]]:
    """Decide pre- or post-contrast for a T1-weighted series.

    Parameters
    ----------
    contrast : sequence of Cue
        Contrast cues (label ``T1C`` = post, ``T1`` = pre).
    study_records_contrast : bool
        Whether another series of the study records a contrast agent; only then does
        silence on this series mean "pre-contrast" with full confidence.

    Returns
    -------
    (SequenceLabel, float, list of str)
        ``T1`` or ``T1C``, the factor to multiply the confidence by (conflicting
        evidence lowers it) and the evidence lines.
    """
    post = _noisy_or([c.weight for c in contrast if c.label is L.T1C])
    pre = _noisy_or([c.weight for c in contrast if c.label is L.T1])
    notes = [c.text for c in contrast]
    if post == 0.0 and pre == 0.0:
        if study_records_contrast:
            return L.T1, 0.95, [*notes, "no contrast agent on this series while the study records one: pre-contrast"]
        return L.T1, 0.75, [*notes, "no contrast information anywhere: pre-contrast assumed, confidence lowered"]
    if post >= pre:
        return L.T1C, 1.0 - pre, notes
    return L.T1, 1.0 - post, notes


def decide(
    cues: Sequence[Cue],
    contrast: Sequence[Cue],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    study_records_contrast: bool = False,
) -> Identification:
    """Turn cues into an :class:`Identification`.

    Parameters
    ----------
    cues : sequence of Cue
        Label cues.
    contrast : sequence of Cue
        Contrast cues (``T1C`` = post, ``T1`` = pre).
    threshold : float
        Below this confidence the label is ``UNKNOWN``.
    study_records_contrast : bool
        See :func:`contrast_decision`.

    Returns
    -------
    Identification
        Source ``"header"``.
    """
    scores, kept = label_scores(cues)
    if not scores:
        return Identification(L.UNKNOWN, 0.0, ["no identifying header evidence"], "header", L.UNKNOWN, {})
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    top, s1 = ranked[0]
    s2 = ranked[1][1] if len(ranked) > 1 else 0.0
    confidence = s1 * (1.0 - s2)
    evidence = [c.text for c in sorted(kept, key=lambda c: c.weight, reverse=True) if c.label is top]
    evidence += [f"against: {c.text}" for c in kept if c.label is not top]
    label = top
    if top is L.T1:
        label, factor, notes = contrast_decision(contrast, study_records_contrast=study_records_contrast)
        confidence *= factor
        evidence += notes
        scores = dict(scores)
        t1 = scores.pop(L.T1)
        scores[label] = t1
    out_scores = {k.value: v for k, v in scores.items()}
    if confidence < threshold:
        evidence.insert(0, f"best candidate {label.value} at {confidence:.2f} is below the threshold {threshold:.2f}")
        return Identification(L.UNKNOWN, confidence, evidence, "header", label, out_scores)
    return Identification(label, confidence, evidence, "header", label, out_scores)
