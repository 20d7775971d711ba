"""``harvest``: corrected SEGs in the PACS → de-identified cases in a new training-set version."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from dicom_node.typed_config import StrictModel
from training.harvest.convert import ConversionError, convert_correction, convert_unlabelled
from training.harvest.dataset import AddResult, TrainingSet
from training.harvest.pacs import OrthancPacs
from training.harvest.select import find_corrections

__all__ = ["HarvestConfig", "HarvestReport", "harvest"]

log = logging.getLogger(__name__)


class HarvestConfig(StrictModel):
    """``[harvest]`` of a retraining config (paths relative to that file).

    Keys: ``url`` (Orthanc's REST root), ``user``, ``password`` (or ``password_env``: the name of
    an environment variable holding it), ``node_manufacturers``
    (Manufacturer of the node's own SEGs, default ``["mrinode"]``), ``out_dir`` (the
    training set's folder), ``channels`` (the sequences a case needs; default the model's),
    ``unlabelled`` (also harvest the studies without a correction, de-identified the same way,
    into a set of their own for pretraining: ``mrinode train pretrain`` reads its manifest),
    ``unlabelled_out_dir`` (default ``<out_dir>-unlabelled``).
    """

    url: str
    user: str = ""
    password: str = ""
    password_env: str = ""
    node_manufacturers: list[str] = Field(default_factory=lambda: ["mrinode"], min_length=1)
    out_dir: Path = Path("var/training-set")
    channels: list[str] = Field(default_factory=list)
    unlabelled: bool = False
    unlabelled_out_dir: Path | None = None

    def unlabelled_dir(self) -> Path:
        """Where unlabelled studies go (default ``<out_dir>-unlabelled``)."""
        return self.unlabelled_out_dir or self.out_dir.with_name(self.out_dir.name + "-unlabelled")


@dataclass
class HarvestReport:
    """What one harvest did (counts and pseudonyms only)."""

    found: int = 0
    skipped_known: int = 0
    converted: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    dataset_version: int = 0
    manifest: str | None = None
    seconds: float = 0.0
    seconds_per_study: list[float] = field(default_factory=list)
    unlabelled_added: int = 0
    unlabelled_version: int = 0
    unlabelled_manifest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


def label_lookup(card: Any) -> tuple[dict[str, int], dict[str, int]]:
    """(property type code → value, lower-case name → value) from a model card's labels."""
    codes = {str(lab.type[0]): int(lab.value) for lab in card.labels}
    names = {str(lab.name).strip().lower(): int(lab.value) for lab in card.labels}
    return codes, names


def harvest(cfg: HarvestConfig, card: Any, channels: list[str] | None = None) -> HarvestReport:
    """Harvest new corrections into a new version of the training set.

    Parameters
    ----------
    cfg : HarvestConfig
        Where the PACS and the training set are.
    card : models.bundle.Card
        The production model's card (its labels map segments to label values).
    channels : list of str, optional
        The sequences a case needs (default ``cfg.channels``, else the card's).

    Returns
    -------
    HarvestReport

    Raises
    ------
    training.harvest.pacs.PacsError
        The PACS does not answer.
    """
    t0 = time.perf_counter()
    password = os.environ.get(cfg.password_env, "") if cfg.password_env else cfg.password
    if cfg.password_env and not password:
        raise ValueError(f"config key 'harvest.password_env': the environment variable {cfg.password_env} is not set.")
    pacs = OrthancPacs(cfg.url, cfg.user, password)
    pacs.check()
    tset = TrainingSet(cfg.out_dir)
    need = list(channels or cfg.channels or card.channels)
    codes, names = label_lookup(card)
    report = HarvestReport()
    known = tset.harvested()
    taken: set[str] = set()
    cases = []
    corrected_studies: set[str] = set()
    for corr in find_corrections(pacs, cfg.node_manufacturers):
        corrected_studies.add(corr.study_id)
        report.found += 1
        ts = time.perf_counter()
        correction_id = tset.pseudonym("seg", str(corr.correction_header.get("SOPInstanceUID", "")))
        if correction_id in known:
            report.skipped_known += 1
            continue
        case_id = tset.pseudonym("case", corr.study_uid)
        try:
            arrays = convert_correction(pacs, corr, need, codes, names)
        except ConversionError as exc:
            report.refused[case_id] = str(exc)
            log.warning("harvest: %s refused (tried again next run): %s", case_id, exc)
            continue
        provenance = {
            "source": f"orthanc:{pacs.url}",
            "correction": correction_id,
            "harvested_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **arrays.correction,
        }
        cases.append((case_id, arrays, provenance))
        taken.add(correction_id)
        report.converted += 1
        report.seconds_per_study.append(time.perf_counter() - ts)
    result: AddResult = tset.commit(cases, source=f"orthanc:{pacs.url}")
    tset.mark_harvested(taken)
    report.added, report.replaced, report.duplicates = result.added, result.replaced, result.duplicates
    report.dataset_version = result.version
    report.manifest = str(result.manifest) if result.manifest else None
    if cfg.unlabelled:
        _harvest_unlabelled(pacs, cfg, need, corrected_studies, report)
    report.seconds = time.perf_counter() - t0
    log.info("harvest: %d corrections found (%d taken before), %d converted, %d new, %d replaced, %d duplicates, "
             "%d refused; training set version %d", report.found, report.skipped_known, report.converted,
             len(report.added), len(report.replaced), len(report.duplicates), len(report.refused),
             report.dataset_version)
    return report


def _harvest_unlabelled(pacs: OrthancPacs, cfg: HarvestConfig, channels: list[str], corrected: set[str],
                        report: HarvestReport) -> None:
    """Studies without a correction → a de-identified unlabelled set (for pretraining)."""
    uset = TrainingSet(cfg.unlabelled_dir(), name="harvested-unlabelled")
    known = uset.harvested()
    taken: set[str] = set()
    cases = []
    for study_id in pacs.studies():
        if study_id in corrected:
            continue
        study_id_pseudonym = uset.pseudonym("study", study_id)
        if study_id_pseudonym in known:
            continue
        try:
            arrays = convert_unlabelled(pacs, study_id, channels)
        except ConversionError as exc:
            log.info("harvest: unlabelled %s left out: %s", study_id_pseudonym, exc)
            taken.add(study_id_pseudonym)
            continue
        provenance = {"source": f"orthanc:{pacs.url}", "harvested_at": datetime.now(UTC).isoformat(timespec="seconds"),
                      "labels": "none (pretraining)"}
        cases.append((uset.pseudonym("case", study_id), arrays, provenance))
        taken.add(study_id_pseudonym)
    result = uset.commit(cases, source=f"orthanc:{pacs.url}")
    uset.mark_harvested(taken)
    report.unlabelled_added = len(result.added) + len(result.replaced)
    report.unlabelled_version = result.version
    report.unlabelled_manifest = str(result.manifest) if result.manifest else None


def resolve(cfg: HarvestConfig, base: Path) -> HarvestConfig:
    """Make ``out_dir`` absolute against ``base``."""
    if not cfg.out_dir.is_absolute():
        cfg.out_dir = (base / cfg.out_dir).resolve()
    return cfg
