"""``mrinode convert DICOM_DIR OUT_DIR``: one NIfTI (+ JSON sidecar) per series and split.

Each sidecar also carries the series' identified sequence (``SequenceLabel``, header rules
only, with the study's contrast context) and its ``SequenceConfidence``, so that training
manifests can be built from the output (``training.manifest.from_converted``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["convert_folder", "register"]

log = logging.getLogger(__name__)


def convert_folder(dicom_dir: Path, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Convert every series under ``dicom_dir``.

    Parameters
    ----------
    dicom_dir : Path
        Folder searched recursively for DICOM files.
    out_dir : Path
        Where ``<series>_<description>[_<split>].nii.gz`` and ``.json`` go.

    Returns
    -------
    written : list of Path
        The NIfTI files written.
    problems : list of str
        One sentence per series that was not converted.
    """
    from dicom_node.identify import identify_study
    from dicom_node.io.errors import SeriesReadError
    from dicom_node.io.grouping import group_series
    from dicom_node.io.nifti import nifti_stem, write_nifti_with_sidecar
    from dicom_node.io.reader import read_series
    from dicom_node.logs import uid_tag

    written: list[Path] = []
    problems: list[str] = []
    used: set[str] = set()
    labels = {
        row.series_uid: {"SequenceLabel": row.identification.label.value,
                         "SequenceConfidence": round(float(row.identification.confidence), 3)}
        for row in identify_study(dicom_dir, use_pixels=False) if row.series_uid
    }
    for uid, paths in group_series(dicom_dir).items():
        try:
            volumes = read_series(paths)
        except SeriesReadError as exc:
            problems.append(str(exc))
            continue
        # A per-series boundary: an unexpected failure of one series is reported and counted,
        # and the other series are still converted (never a traceback for the user).
        except Exception as exc:
            problems.append(f"Cannot read series ({uid_tag(uid)}): unexpected {type(exc).__name__}: {exc}.")
            log.debug("unexpected error reading %s", uid_tag(uid), exc_info=True)
            continue
        for vol in volumes:
            stem = nifti_stem(vol)
            if stem in used:
                stem = f"{stem}_{uid_tag(uid)[4:]}"
            used.add(stem)
            nii, _ = write_nifti_with_sidecar(vol, out_dir, stem, labels.get(uid))
            written.append(nii)
    return written, problems


def _run(args: argparse.Namespace) -> int:
    dicom_dir, out_dir = Path(args.dicom_dir), Path(args.out_dir)
    if not dicom_dir.exists():
        print(f"mrinode convert: {dicom_dir} does not exist.", file=sys.stderr)
        return 2
    written, problems = convert_folder(dicom_dir, out_dir)
    for path in written:
        print(f"wrote {path}")
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if not written:
        why = "no DICOM image series found" if not problems else f"all {len(problems)} series were refused"
        print(f"mrinode convert: nothing converted from {dicom_dir} ({why}).", file=sys.stderr)
        return 1
    print(f"converted {len(written)} volume(s); {len(problems)} series skipped.")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``convert`` sub-command.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The top-level sub-parsers.
    """
    p = subparsers.add_parser(
        "convert",
        help="convert DICOM series to NIfTI with JSON sidecars",
        description="Convert every DICOM series under DICOM_DIR to NIfTI (.nii.gz) with a JSON sidecar of "
        "acquisition parameters; 4-D series are split (b-value, temporal position). Exit code 1 only when "
        "nothing was converted.",
    )
    p.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder with DICOM files (searched recursively)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    p.set_defaults(func=_run)
