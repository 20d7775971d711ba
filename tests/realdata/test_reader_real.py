"""The reader next to dcm2niix on every real series of the corpus (issue 14, part 3).

Every real series dcm2niix converts, mrinode converts too with the affine within 1e-3 mm, or
the corpus says why dcm2niix is wrong (``reader_refusal`` with the expected refusal, or
``affine_tolerance_mm`` with ``reader_note``).
"""

from __future__ import annotations

import shutil

import pytest

from training.realdata import load_corpus
from training.realdata.judge import read_case

pytestmark = pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix (Debian) is installed by make setup")

CASES = [c for c in load_corpus() if c.kind == "series" and c.label != "UNKNOWN"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reader_matches_dcm2niix_or_says_why(case) -> None:  # type: ignore[no-untyped-def]
    r = read_case(case)
    refusal = case.extra.get("reader_refusal")
    if r.ours == "refuses" and r.theirs == "refuses":
        return  # neither reads it (e.g. a header without pixel data)
    if r.ours == "refuses":
        assert refusal, f"mrinode refuses a series dcm2niix {r.theirs}: {r.detail}"
        assert refusal in r.detail and case.extra.get("reader_note")
        return
    assert refusal is None, f"{case.id} is now read; drop its reader_refusal"
    if r.theirs == "converts":
        tol = float(case.extra.get("affine_tolerance_mm", 1e-3))
        assert r.affine_diff_mm is not None, r.detail
        assert r.affine_diff_mm <= tol, (r.affine_diff_mm, r.detail)
        if tol > 1e-3:
            assert case.extra.get("reader_note"), "a looser tolerance needs a reason"
