"""The SR of a pipeline that could not run: which sequences it needed and what the study holds.

A study is never answered with silence: when a pipeline's required sequences are missing
(or none it can use is present) it still gets a TID 1500 report whose status is "Not
performed", naming the missing sequences, with the UIDs the pipeline's SR would have had
(so a later complete study's result replaces it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_node.logs import uid_tag

if TYPE_CHECKING:
    from dicom_node.io.codes import AlgorithmSpec
    from dicom_node.pipelines.analysis import SequenceNeeds, StudyAnalysis
    from dicom_node.pipelines.uids import ResultUIDs

__all__ = ["write_not_run_report"]

log = logging.getLogger(__name__)


def write_not_run_report(
    analysis: StudyAnalysis,
    needs: SequenceNeeds,
    present: Any,
    algorithm: AlgorithmSpec,
    out_dir: Path,
    uids: ResultUIDs,
    what: str,
) -> tuple[Path, list[str], list[str]]:
    """Write ``out_dir/sr.dcm`` saying that ``what`` was not run and why.

    Parameters
    ----------
    analysis : StudyAnalysis
        The study's identification (every series is listed in the SR).
    needs : SequenceNeeds
        What the pipeline needs.
    present : collection of str
        The sequences present and readable.
    algorithm : AlgorithmSpec
        The algorithm named as the SR's device.
    out_dir : Path
        Where ``sr.dcm`` goes (created if missing).
    uids : ResultUIDs
        The SR's Series and SOP Instance UIDs.
    what : str
        The subject of the sentence, e.g. ``"Model brain-tumour-demo 0.1.0"``.

    Returns
    -------
    (Path, list of str, list of str)
        The SR file, its notes (the first says what was missing) and the missing sequences.

    Raises
    ------
    ValueError
        If no series of the study can be read (not even an SR can reference it).
    """
    from dicom_node.io.sr import write_measurement_report

    evidence = analysis.evidence()
    if not evidence:
        raise ValueError(f"study {uid_tag(analysis.study_uid)}: no series could be read, so not even an SR can be written.")
    missing = needs.missing(present) or [s for s in needs.usable if s not in present]
    found = ", ".join(sorted({str(r.label) for r in analysis.rows if r.series_uid})) or "none"
    notes = [f"{what} was not run: it needs {needs.describe()}; the study holds {found}."]
    notes.extend(analysis.unreadable(needs.usable))
    sr = write_measurement_report(
        seg=None, reference=None, source_volumes=evidence, segment_volumes_ml={},
        identifications=[r for r in analysis.rows if r.series_uid], algorithm=algorithm, missing_sequences=missing,
        notes=notes, series_instance_uid=uids.sr_series, sop_instance_uid=uids.sr_instance,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "sr.dcm"
    sr.save_as(path)
    log.info("study %s: %s not run, missing %s", uid_tag(analysis.study_uid), algorithm.name, ", ".join(missing) or "-")
    return path, notes, missing
