"""The dcm-classifier anchor for the real-series benchmark, run out of process.

dcm-classifier (PyPI ``dcm-classifier==0.9.9``, BRAINSia / University of Iowa,
Apache-2.0) classifies MR series from their DICOM headers with a one-vs-all random
forest shipped as ONNX. Its dependencies (itk, onnxruntime, pandas, python-gdcm) must
stay out of mrinode's environment, so it lives in a virtual environment of its own and
``bench/_dcmclf_runner.py`` is run there in a subprocess.

``ensure_env`` makes that environment (or takes the interpreter named by
``MRINODE_DCMCLF_PYTHON``), ``classify`` runs the runner over series, and
``to_vocabulary`` maps dcm-classifier's labels onto mrinode's sequence vocabulary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["ENV_VAR", "VERSION", "classify", "ensure_env", "to_vocabulary"]

#: The dcm-classifier release the benchmark pins.
VERSION = "0.9.9"
#: Environment variable naming an existing interpreter that has dcm-classifier installed.
ENV_VAR = "MRINODE_DCMCLF_PYTHON"
#: Suffix ``classify`` appends to a raw label when dcm-classifier reports a contrast agent.
CONTRAST_SUFFIX = "+contrast"
#: dcm-classifier's marker for a maximum class probability under its 0.4 threshold.
LOW_PREFIX = "LOW_PROBABILITY_"

RUNNER = Path(__file__).with_name("_dcmclf_runner.py")

#: Every label dcm-classifier 0.9.9 can give a series, lower-cased, to mrinode's vocabulary.
#: The model's ten classes (``imagetype_to_integer_mapping``): t1w, gret2star, t2w, flair,
#: b0, tracew, adc, fa, eadc, dwig; the series-level overrides: ``PDT2`` (a series holding
#: pd and t2w volumes), ``perfusion`` (ImageType PERFUSION), ``dwig``/``tracew`` (from the
#: gradient directions), ``MISSING_IMAGE_TYPE``; ``INVALID`` (a required header field is
#: missing or not MR) and ``InvalidDicomInputs``. ``pd``, ``localizer`` and ``field map``
#: are not classes of this model; they are mapped in case a later model adds them.
_MAP: dict[str, str] = {
    "t1w": "T1",
    "t2w": "T2",
    "flair": "FLAIR",
    "pd": "PD",
    "pdw": "PD",
    "pdt2": "PD",  # dual-echo PD/T2 series: mrinode's PD rules claim the pair
    "gret2star": "SWI",  # mrinode's SWI includes T2*-weighted GRE
    "swi": "SWI",
    "b0": "DWI",
    "dwig": "DWI",
    "tracew": "DWI",
    "dwi": "DWI",
    "adc": "ADC",
    "eadc": "OTHER",  # exponential ADC: OTHER in mrinode's rules (identify/keywords.py)
    "fa": "OTHER",  # diffusion tensor map
    "perfusion": "OTHER",
    "fieldmap": "OTHER",
    "field map": "OTHER",
    "localizer": "LOCALIZER",
    "invalid": "UNKNOWN",
    "invaliddicominputs": "UNKNOWN",
    "missing_image_type": "UNKNOWN",
    "unknown": "UNKNOWN",
}


def ensure_env(root: Path = Path("var/dcmclf-venv")) -> Path:
    """Return a Python interpreter that can import dcm-classifier, creating one if needed.

    With ``MRINODE_DCMCLF_PYTHON`` set, that interpreter is returned as it is. Otherwise a
    virtual environment is made at ``root`` with ``python3.11 -m venv`` and
    ``dcm-classifier==0.9.9`` installed into it, unless it already imports.

    Parameters
    ----------
    root : Path
        Where the virtual environment lives.

    Returns
    -------
    Path
        The environment's ``python``.

    Raises
    ------
    RuntimeError
        If ``MRINODE_DCMCLF_PYTHON`` names no interpreter, or the environment cannot be
        made or dcm-classifier cannot be installed.
    """
    named = os.environ.get(ENV_VAR)
    if named:
        python = Path(named)
        if not python.exists():
            raise RuntimeError(f"{ENV_VAR}={named} names no interpreter.")
        return python
    python = root / "bin" / "python"
    if python.exists() and _imports(python):
        return python
    print(
        f"bench.dcmclf: creating {root} with dcm-classifier=={VERSION} (itk, onnxruntime, pandas: a few minutes)"
    )
    steps = [
        ["python3.11", "-m", "venv", str(root)],
        [str(python), "-m", "pip", "install", "--quiet", f"dcm-classifier=={VERSION}"],
    ]
    for cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise RuntimeError(
                f"Could not run {cmd[0]} to make the dcm-classifier environment: {exc}."
            ) from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(
                f"Making the dcm-classifier environment at {root} failed at `{' '.join(cmd)}` "
                f"(exit {done.returncode}): {' / '.join(tail)}; set {ENV_VAR} to an interpreter "
                f"that has dcm-classifier=={VERSION} to skip this step."
            )
    return python


def _imports(python: Path) -> bool:
    done = subprocess.run(
        [str(python), "-c", "import dcm_classifier"], capture_output=True, check=False, timeout=120
    )
    return done.returncode == 0


def classify(
    series: dict[str, list[Path]], python: Path, *, timeout_s: float | None = None
) -> dict[str, tuple[str, float | None]]:
    """Classify series with dcm-classifier in its own interpreter.

    Parameters
    ----------
    series : dict of str to list of Path
        Series id to the files of that series.
    python : Path
        An interpreter that imports dcm_classifier (see ``ensure_env``).
    timeout_s : float, optional
        Limit for the whole subprocess; ``None`` waits.

    Returns
    -------
    dict of str to (str, float or None)
        Series id to (raw label, probability). The raw label is dcm-classifier's series
        modality (``LOW_PROBABILITY_`` kept where every volume carrying it was under its
        threshold), with ``"+contrast"`` appended when it reports contrast and the header
        names a ContrastBolusAgent (0.9.9 flags every series without the tag); a
        series it failed on is ``("ERROR: <message>", None)``. ``to_vocabulary`` maps the
        label.

    Raises
    ------
    RuntimeError
        If the runner itself fails or answers something other than JSON.
    """
    detail = classify_detail(series, python, timeout_s=timeout_s)
    out: dict[str, tuple[str, float | None]] = {}
    for sid in series:
        answer = detail.get(sid) or {"error": "no answer from the runner"}
        if answer.get("error") or not answer.get("label"):
            out[sid] = (f"ERROR: {answer.get('error') or 'no label'}", None)
            continue
        label = str(answer["label"])
        if answer.get("contrast"):
            label += CONTRAST_SUFFIX
        prob = answer.get("probability")
        out[sid] = (label, float(prob) if prob is not None else None)
    return out


def classify_detail(
    series: dict[str, list[Path]], python: Path, *, timeout_s: float | None = None
) -> dict[str, dict[str, Any]]:
    """Run the runner and return its full answer per series (label, probability,
    contrast, per-volume labels, missing required fields, seconds, error).

    Parameters
    ----------
    series : dict of str to list of Path
        Series id to the files of that series.
    python : Path
        An interpreter that imports dcm_classifier.
    timeout_s : float, optional
        Limit for the whole subprocess.

    Returns
    -------
    dict of str to dict
        The runner's JSON answer (see ``bench/_dcmclf_runner.py``).

    Raises
    ------
    RuntimeError
        If the runner exits non-zero, times out or prints no JSON object.
    """
    spec = {
        "series": [
            {"id": sid, "files": [str(Path(f).resolve()) for f in files]} for sid, files in series.items()
        ]
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="dcmclf-in-", delete=False) as fh:
        json.dump(spec, fh)
        spec_path = Path(fh.name)
    try:
        try:
            done = subprocess.run(
                [str(python), str(RUNNER), str(spec_path)],
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"dcm-classifier ran past {timeout_s} s on {len(series)} series.") from exc
        except OSError as exc:
            raise RuntimeError(f"Could not start dcm-classifier's interpreter {python}: {exc}.") from exc
    finally:
        spec_path.unlink(missing_ok=True)
    if done.returncode != 0:
        tail = " / ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"The dcm-classifier runner exited {done.returncode}: {tail}")
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"The dcm-classifier runner printed no JSON: {done.stdout[:200]!r}") from exc
    if not isinstance(result, dict):
        raise RuntimeError("The dcm-classifier runner's answer is not a JSON object.")
    return result


def to_vocabulary(raw: str) -> str:
    """Map a dcm-classifier label onto mrinode's sequence vocabulary.

    Parameters
    ----------
    raw : str
        A raw label as ``classify`` returns it: dcm-classifier's modality (``"t1w"``,
        ``"dwig"``, ``"PDT2"``, ``"INVALID"``...), possibly with a ``"LOW_PROBABILITY_"``
        prefix and a ``"+contrast"`` suffix, or ``"ERROR: ..."``.

    Returns
    -------
    str
        One of T1, T1C, T2, FLAIR, PD, DWI, ADC, SWI, LOCALIZER, OTHER, UNKNOWN. ``t1w``
        with contrast is T1C; a low-probability label, INVALID, an error or a label not
        known here is UNKNOWN (mrinode's UNKNOWN means "not confident").
    """
    text = raw.strip()
    if text.upper().startswith("ERROR"):
        return "UNKNOWN"
    contrast = text.endswith(CONTRAST_SUFFIX)
    text = text.removesuffix(CONTRAST_SUFFIX)
    if text.upper().startswith(LOW_PREFIX):
        return "UNKNOWN"
    label = _MAP.get(text.lower(), "UNKNOWN")
    if label == "T1" and contrast:
        return "T1C"
    return label


if __name__ == "__main__":  # pragma: no cover - a manual check: python -m bench.dcmclf FILE...
    py = ensure_env()
    answers = classify({str(i): [Path(a)] for i, a in enumerate(sys.argv[1:])}, py)
    for sid, (raw, prob) in answers.items():
        print(sys.argv[1 + int(sid)], raw, prob, to_vocabulary(raw))
