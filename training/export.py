"""Export a fine-tuned segmenter as a bundle (weights + card)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.bundle import NOT_CLINICAL, Card, LabelInfo, save_bundle
from training.ft_config import FinetuneConfig
from training.manifest import Manifest

__all__ = ["CARRIED_PREPROCESSING", "brats_labels", "carried_preprocessing", "export_bundle"]

#: Card decisions that a warm start from a bundle keeps: chosen on that bundle's selection runs (what the
#: SR calls not assessed, the out-of-distribution reference, the shifted tilings averaged, the bias-field
#: correction, the components too unsure to report), not set by the training config.
CARRIED_PREPROCESSING = ("ood", "label_requires", "label_requires_note", "shift_average", "bias_correction",
                         "bias_correction_channels", "bias_correction_note", "min_component_peak",
                         "min_component_peak_scope", "min_component_peak_note")


def brats_labels() -> list[LabelInfo]:
    """The BraTS tumour labels 1-3 with the SNOMED CT codes and colours of ``dicom_node.io.codes``."""
    from dicom_node.io.codes import BRATS_SEGMENTS

    return [
        LabelInfo(
            value=s.label_value,
            name=s.label,
            category=(s.category.value, s.category.scheme_designator, s.category.meaning),
            type=(s.type.value, s.type.scheme_designator, s.type.meaning),
            colour=s.rgb,
            tracking_id=s.tracking_id,
            anatomic_region=None if s.anatomic_region is None else (
                str(s.anatomic_region.value), str(s.anatomic_region.scheme_designator),
                str(s.anatomic_region.meaning)),
        )
        for s in BRATS_SEGMENTS
    ]


def carried_preprocessing(init_weights: str | Path) -> dict[str, Any]:
    """The :data:`CARRIED_PREPROCESSING` fields of the bundle a run warm-started from.

    Parameters
    ----------
    init_weights : str or Path
        ``[train] init_weights``: a bundle folder, a checkpoint file or empty.

    Returns
    -------
    dict
        The fields the bundle's card has; empty for a checkpoint or no warm start.
    """
    import json

    card = Path(init_weights) / "card.json" if init_weights else None
    if card is None or not card.is_file():
        return {}
    pre = json.loads(card.read_text()).get("preprocessing", {}) or {}
    return {k: pre[k] for k in CARRIED_PREPROCESSING if k in pre}


def _trained_bias_correction(cfg: FinetuneConfig) -> dict[str, Any]:
    """The card's N4 keys when the run trained on N4-corrected sequences (they win over carried ones)."""
    if not cfg.bias_correction_channels:
        return {}
    return {"bias_correction": "n4", "bias_correction_channels": list(cfg.bias_correction_channels)}


def export_bundle(cfg: FinetuneConfig, net: Any, manifest: Manifest, metrics: dict[str, float],
                  steps: int, losses: list[float]) -> Path:
    """Write the bundle named by ``cfg.bundle_out`` and return its folder."""
    network = {k: v for k, v in cfg.network.items() if k != "encoder_checkpoint"}
    card = Card(
        name=cfg.name,
        version=cfg.bundle_version,
        task="segmentation",
        labels=brats_labels(),
        algorithm={"family": ["123110", "DCM", "Artificial Intelligence"], "source": "mrinode"},
        channels=list(cfg.channels),
        required_sequences=[],
        optional_sequences=list(cfg.channels),
        preprocessing={
            "orientation": "RAS",
            "spacing_mm": cfg.spacing_mm,
            "normalize": cfg.normalize,
            "roi_size": cfg.inference_roi_size,
            "training_roi_size": cfg.roi_size,
            "overlap": cfg.overlap,
            "missing_sequences": "zero channels (trained with sequence dropout)",
            "min_component_fraction": cfg.min_component_fraction,
            "mask_outside_head": cfg.mask_outside_head,
        } | carried_preprocessing(cfg.init_weights) | _trained_bias_correction(cfg),
        network=network,
        training={
            "data": manifest.source,
            "subjects": len(manifest.subjects),
            "manifest_sha256": manifest.sha256(),
            "steps": steps,
            "final_loss": losses[-1] if losses else None,
            "encoder_checkpoint": cfg.network.get("encoder_checkpoint", ""),
            "config": cfg.raw,
            "command": cfg.command,
        },
        metrics={"validation": metrics},
        intended_use=(cfg.description + " " if cfg.description else "") + NOT_CLINICAL,
    )
    bundle = save_bundle(cfg.bundle_out, card, net.state_dict(), half=cfg.bundle_half)
    return bundle.path
