"""Run dcm-classifier (BRAINSia, Apache-2.0) on DICOM series; a standalone script.

This file is run by the interpreter of dcm-classifier's own virtual environment (see
``bench.dcmclf``), so it imports only the standard library, dcm_classifier and its
dependencies, never mrinode.

Usage: ``python _dcmclf_runner.py INPUT.json`` where ``INPUT.json`` holds
``{"series": [{"id": str, "files": [path, ...]}, ...]}``. Each series is linked into a
study folder of its own and run through dcm-classifier as its examples do
(``ProcessOneDicomStudyToVolumesMappingBase`` with an ``ImageTypeClassifierBase`` that
loads the shipped ``ova_rf_classifier.onnx``, then ``run_inference``). The answer, one
JSON object on stdout, maps each id to::

    {"label": str | None,        # dcm-classifier's series modality, e.g. "t1w", "dwig"
     "probability": float | None,  # the model's probability of that label (mean over volumes)
     "contrast": bool,             # its contrast flag, where the header names an agent (below)
     "contrast_flag": bool,        # its contrast flag as it is (series.get_has_contrast())
     "contrast_agent": str | None, # ContrastBolusAgent as dcm-classifier read it
     "volumes": [str, ...],        # the per-volume labels, "LOW_PROBABILITY_" prefix kept
     "missing_required": [str, ...],  # for "INVALID": required fields the header lacks
     "seconds": float,             # wall time for this series
     "error": str | None}

The series label is dcm-classifier's own series-level aggregation (which may override
the per-volume labels for diffusion, ``PDT2`` and perfusion). dcm-classifier drops its
``LOW_PROBABILITY_`` prefix (maximum class probability under 0.4) at series level; it is
put back here when every volume that carries the label was below that threshold, so the
caller can tell a guess from an answer.

dcm-classifier 0.9.9 stores an absent ContrastBolusAgent as its default ``-12345`` and
then reports contrast for it ("none" is not in "-12345"), so every series without the
tag would be "with contrast". ``contrast`` is therefore its flag only where the header
holds an agent; ``contrast_flag`` keeps the flag as it is. A failing series gives ``label: null`` and an
``error``; the script itself never stops on one series. Everything dcm-classifier, ITK
or GDCM print goes to stderr (file descriptor 1 is pointed at 2 while they run).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOW = "LOW_PROBABILITY_"


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 (and ``sys.stdout``) at stderr while the block runs."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _link_series(files: list[str], folder: Path) -> int:
    """Symlink (or copy, where links fail; gunzip ``.gz``) ``files`` into ``folder``; return how many."""
    folder.mkdir(parents=True)
    n = 0
    for i, f in enumerate(files):
        src = Path(f).resolve()
        if not src.is_file():
            continue
        dst = folder / f"{i:06d}_{src.name}"
        if src.suffix == ".gz":
            with gzip.open(src, "rb") as fin, (folder / f"{i:06d}_{src.stem}").open("wb") as fout:
                shutil.copyfileobj(fin, fout)
            n += 1
            continue
        try:
            dst.symlink_to(src)
        except OSError:
            shutil.copyfile(src, dst)
        n += 1
    return n


def _label_probability(volume: Any, label: str) -> float | None:
    """The model's probability of ``label`` for one volume, ``None`` where it has none."""
    frame = volume.get_modality_probabilities()
    column = f"GUESS_ONNX_{label}"
    if frame is None or column not in getattr(frame, "columns", ()):
        return None
    value = frame[column].iloc[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _contrast_agent(volumes: list[Any]) -> str | None:
    """ContrastBolusAgent as dcm-classifier read it, ``None`` where the header has none."""
    if not volumes:
        return None
    value = volumes[0].get_volume_dictionary().get("ContrastBolusAgent")
    if value is None or str(value) in ("-12345", "INVALID_VALUE", "None", ""):
        return None
    return str(value)


def _missing_required(volumes: list[Any]) -> list[str]:
    """The fields dcm-classifier requires that the first file of the first volume lacks."""
    import pydicom
    from dcm_classifier.dicom_config import required_DICOM_fields

    if not volumes:
        return []
    first = volumes[0].get_one_volume_dcm_filenames()[0]
    ds = pydicom.dcmread(str(first), stop_before_pixels=True, force=True)
    # dcm-classifier accepts an absent or empty EchoTime / RepetitionTime (ADC maps).
    lenient = {"EchoTime", "RepetitionTime"}
    return [
        f
        for f in required_DICOM_fields
        if f not in lenient and (f not in ds or ds[f].value in (None, "", b""))
    ]


def _classify_one(files: list[str], workdir: Path, model: Path) -> dict[str, Any]:
    """Run dcm-classifier on one series, linked into ``workdir``."""
    from dcm_classifier.image_type_inference import ImageTypeClassifierBase
    from dcm_classifier.study_processing import ProcessOneDicomStudyToVolumesMappingBase

    if _link_series(files, workdir) == 0:
        raise FileNotFoundError("none of the series' files exists")
    inferer = ImageTypeClassifierBase(classification_model_filename=model)
    study = ProcessOneDicomStudyToVolumesMappingBase(study_directory=workdir, inferer=inferer)
    study.run_inference()
    series_by_number = study.get_study_dictionary()
    if not series_by_number:
        raise ValueError("dcm-classifier (ITK/GDCM) found no readable DICOM series in the files")
    # The files are one series; where dcm-classifier splits them (several SeriesNumbers),
    # keep the part with the most files.
    series = max(
        series_by_number.values(),
        key=lambda s: sum(len(v.get_one_volume_dcm_filenames()) for v in s.get_volume_list()),
    )
    volumes = list(series.get_volume_list())
    volume_labels = [str(v.get_volume_modality()) for v in volumes]
    label = str(series.get_series_modality())
    if not label and volume_labels:  # not expected; fall back on the most common volume label
        label = Counter(volume_labels).most_common(1)[0][0]
    base = label.removeprefix(LOW)
    carriers = [v for v, raw in zip(volumes, volume_labels, strict=True) if raw.removeprefix(LOW) == base]
    if carriers and all(raw.startswith(LOW) for raw in volume_labels if raw.removeprefix(LOW) == base):
        label = LOW + base
    probs = [p for p in (_label_probability(v, base) for v in carriers) if p is not None]
    flag = bool(series.get_has_contrast())
    agent = _contrast_agent(volumes)
    return {
        "missing_required": _missing_required(volumes) if base == "INVALID" else [],
        "label": label,
        "probability": sum(probs) / len(probs) if probs else None,
        "contrast": flag and agent is not None,
        "contrast_flag": flag,
        "contrast_agent": agent,
        "volumes": volume_labels,
        "error": None,
    }


def run(series: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Classify every series; errors are caught per series.

    Parameters
    ----------
    series : list of dict
        Items ``{"id": str, "files": [str, ...]}``.

    Returns
    -------
    dict
        Id to answer, as described in the module docstring.
    """
    out: dict[str, dict[str, Any]] = {}
    model: Path | None = None
    with tempfile.TemporaryDirectory(prefix="dcmclf-") as tmp:
        for index, item in enumerate(series):
            sid = str(item.get("id", index))
            t0 = time.perf_counter()
            try:
                if model is None:
                    import dcm_classifier

                    model = Path(dcm_classifier.__file__).parent / "models" / "ova_rf_classifier.onnx"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    answer = _classify_one(
                        [str(f) for f in item.get("files", [])], Path(tmp) / f"study{index:05d}", model
                    )
            except Exception as exc:  # one bad series never stops the others
                traceback.print_exc(file=sys.stderr)
                answer = {
                    "label": None,
                    "probability": None,
                    "contrast": False,
                    "contrast_flag": False,
                    "contrast_agent": None,
                    "volumes": [],
                    "missing_required": [],
                    "error": f"{type(exc).__name__}: {exc}",
                }
            answer["seconds"] = round(time.perf_counter() - t0, 4)
            out[sid] = answer
    return out


def main(argv: list[str] | None = None) -> int:
    """Read the input JSON named on the command line and print the answers as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: _dcmclf_runner.py INPUT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    with _stdout_to_stderr():
        result = run(list(spec.get("series", [])))
    sys.stdout.write(json.dumps(result))
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
