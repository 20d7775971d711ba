"""Judge the product on the real-scan corpus: identification and reading.

The same functions feed the tests (``tests/realdata``) and ``python -m bench.real``, so the
figures in the README and the assertions in ``make test`` come from one code path.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.errors
from pydicom.dataset import Dataset

from training.realdata.corpus import CorpusCase
from training.realdata.stage import stage, strip_descriptive

__all__ = ["IdentifyResult", "ReadResult", "case_headers", "identify_case", "read_case", "study_contrast", "verdict"]


@dataclass
class IdentifyResult:
    """What identification said about one series, four ways."""

    case: CorpusCase
    header: tuple[str, float]
    stripped: tuple[str, float]
    fused: tuple[str, float] | None
    ood_score: float | None
    pixel_top: str | None


def verdict(truth: str, answer: str) -> str:
    """``right``, ``unknown`` (abstained) or ``wrong`` (a label other than the truth)."""
    if answer == truth:
        return "right"
    if answer == "UNKNOWN":
        return "unknown"
    return "wrong"


def case_headers(files: Sequence[Path]) -> list[tuple[Path, Dataset]]:
    """Read every DICOM header of a staged case (no pixel data), skipping files that are not DICOM.

    Unlike :func:`dicom_node.identify.study.read_headers` it keeps files without a
    SeriesInstanceUID: some package test files lack one, and their headers are still evidence.
    """
    out: list[tuple[Path, Dataset]] = []
    for f in files:
        try:
            out.append((f, pydicom.dcmread(f, stop_before_pixels=True)))
        except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError):
            continue  # a non-DICOM file in a package folder is skipped, as the node would skip it
    return out


def study_contrast(cases: Sequence[CorpusCase]) -> dict[str, bool]:
    """Whether another series of each case's study records a contrast agent, as the node sees a study.

    The node identifies a whole study at once (``identify_study``): a T1 without an agent is
    confidently pre-contrast when another series of the same study records one. Cases that
    share a StudyInstanceUID are one study here too.
    """
    from dicom_node.identify.header import has_contrast_agent
    from training.realdata.corpus import resolve

    study_of: dict[str, str] = {}
    agent_in: dict[str, bool] = {}
    for case in cases:
        files = resolve(case)
        if case.kind != "series" or not files:
            continue
        try:
            ds = pydicom.dcmread(files[0], stop_before_pixels=True) if files[0].suffix != ".gz" else None
        except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError):
            ds = None
        uid = str(ds.get("StudyInstanceUID", "")) if ds is not None else ""
        study_of[case.id] = uid or case.id
        agent = has_contrast_agent(str(ds.get("ContrastBolusAgent", "") or "")) if ds is not None else False
        agent_in[study_of[case.id]] = agent_in.get(study_of[case.id], False) or agent
    return {cid: agent_in[uid] for cid, uid in study_of.items()}


def identify_case(case: CorpusCase, classifier: Any | None = None, *, study_records_contrast: bool = False) -> IdentifyResult:
    """Identify one series case with intact headers, stripped headers and (optionally) pixels.

    Parameters
    ----------
    case : CorpusCase
        A ``kind == "series"`` case.
    classifier : models.seqclf.SequenceClassifier, optional
        With it, the pixel path runs too.
    study_records_contrast : bool
        Whether another series of its study records a contrast agent (see :func:`study_contrast`).
    """
    from dicom_node.identify import identify_series
    from dicom_node.identify.study import load_pixels

    with tempfile.TemporaryDirectory(prefix="realcase-") as tmp:
        items = case_headers(stage(case, tmp))
        headers = [ds for _, ds in items]
        h = identify_series(headers, study_records_contrast=study_records_contrast)
        s = identify_series([strip_descriptive(d) for d in headers], study_records_contrast=study_records_contrast)
        fused: tuple[str, float] | None = None
        score: float | None = None
        top: str | None = None
        if classifier is not None and items:
            pixels = load_pixels(items)
            if pixels is not None and pixels.ndim == 3 and min(pixels.shape[1:]) >= 8:
                f = identify_series(headers, pixels, classifier=classifier, study_records_contrast=study_records_contrast)
                fused = (f.label.value, f.confidence)
                score = classifier.ood_score(pixels)
                probs = classifier.predict(pixels)
                top = max(probs, key=lambda k: probs[k])
    return IdentifyResult(case, (h.label.value, h.confidence), (s.label.value, s.confidence), fused, score, top)


@dataclass
class ReadResult:
    """The reader's outcome next to dcm2niix's for one series."""

    case: CorpusCase
    ours: str
    theirs: str
    affine_diff_mm: float | None
    detail: str


def _dcm2niix(src: Path, out: Path) -> list[Path]:
    exe = shutil.which("dcm2niix")
    if exe is None:
        raise RuntimeError("dcm2niix is not installed (apt-get install dcm2niix).")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, "-z", "n", "-b", "n", "-f", "%s_%j_%e", "-o", str(out), str(src)],
                   capture_output=True, text=True, check=False)
    return sorted(out.glob("*.nii"))


def read_case(case: CorpusCase) -> ReadResult:
    """Read a series with mrinode and with dcm2niix and compare their grids.

    ``ours``/``theirs`` are ``converts`` or ``refuses``; ``affine_diff_mm`` is the largest
    difference between the two affines (both reoriented to the closest canonical axes) when
    each made exactly one volume of the same shape, else ``None``.
    """
    import nibabel as nib

    from dicom_node.io.errors import SeriesReadError
    from dicom_node.io.reader import read_series

    with tempfile.TemporaryDirectory(prefix="realread-") as tmp:
        src = Path(tmp) / "dcm"
        files = [f for f, _ in case_headers(stage(case, src))]
        detail = ""
        vols = []
        try:
            vols = read_series(files)
            ours = "converts"
        except SeriesReadError as exc:
            ours, detail = "refuses", str(exc)
        niis = _dcm2niix(src, Path(tmp) / "out")
        theirs = "converts" if niis else "refuses"
        diff: float | None = None
        if vols and niis:
            # a split series (b-values, echoes) is several volumes here and one 4-D file there:
            # the first volume of each shares the grid
            theirs_img: Any = nib.load(niis[0])
            a = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(vols[0].data), vols[0].affine))
            b = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(theirs_img.shape[:3], np.uint8), theirs_img.affine))
            if a.shape[:3] == b.shape[:3]:
                diff = float(np.abs(a.affine - b.affine).max())
            else:
                detail = detail or f"shapes differ: {a.shape[:3]} vs {b.shape[:3]}"
            if len(vols) != len(niis):
                detail = (detail + "; " if detail else "") + f"{len(vols)} volume(s) vs dcm2niix's {len(niis)} file(s)"
    return ReadResult(case, ours, theirs, diff, detail)
