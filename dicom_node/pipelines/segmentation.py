"""The generic segmentation pipeline: a model card says everything, the pipeline only wires.

Sequences (required, optional, channel order), segment labels with their SNOMED CT codes,
colours and tracking ids, and the algorithm identification all come from the model's card
(``card.json`` of a native bundle, the sidecar of a MONAI Bundle); the model is loaded warm
through :func:`models.registry.load_model`. A new model is a bundle plus a
``[[pipelines]]`` entry::

    [[pipelines]]
    name = "my-model"
    function = "dicom_node.pipelines.segmentation:run"
    [pipelines.options]
    model = "my-bundle"

Options (the pipeline's ``options`` table):

``model``
    Bundle name or folder (required here; :mod:`dicom_node.pipelines.tumour` defaults it).
``models_dir``
    Extra folder searched for bundles.
``overlap``
    Sliding-window overlap (default: the card's).
``use_pixels``
    Let identification use the image-based classifier too (default true; only when the
    pipeline is run alone, e.g. by ``mrinode infer`` — in a worker the study is identified
    once for every pipeline).
``labelmap``
    Write a LABELMAP SEG instead of BINARY (default false).

Outputs: ``seg.dcm`` + ``sr.dcm``, or ``sr.dcm`` alone saying what was missing. Their UIDs
are deterministic (:mod:`dicom_node.pipelines.uids`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_node.logs import uid_tag
from dicom_node.pipelines import PipelineRequest, PipelineResult
from dicom_node.pipelines.analysis import (
    REFERENCE_PREFERENCE,
    SequenceNeeds,
    analyse_study,
    combine_needs,
    reference_label,
)

if TYPE_CHECKING:
    from models.bundle import Card

__all__ = ["SegmentationPipeline", "load_card", "load_model", "run"]

log = logging.getLogger(__name__)


def load_card(model: str, search_paths: list[str | Path] | None = None) -> Card:
    """Read a model's card without loading its network (native bundle or MONAI Bundle).

    Parameters
    ----------
    model : str
        Bundle name or folder.
    search_paths : list of str or Path, optional
        Extra bundle folders.

    Returns
    -------
    models.bundle.Card

    Raises
    ------
    models.bundle.BundleError
        Unknown bundle (with a did-you-mean) or an invalid card (file and key named).
    """
    from models.bundle import read_card
    from models.registry import find_bundle

    kind, folder = find_bundle(model, search_paths)
    if kind == "native":
        return read_card(folder)
    from models.monai_bundle import read_card as read_monai_card

    card: Card = read_monai_card(folder)
    return card


def load_model(model: str, device: str, search_paths: list[str | Path] | None, overlap: float | None) -> Any:
    """The warm model (``.card``, ``.predict(images, affine)``) from :func:`models.registry.load_model`."""
    from models.registry import load_model as registry_load

    return registry_load(model, device=device, search_paths=search_paths, overlap=overlap)


class SegmentationPipeline:
    """A card-driven segmentation pipeline (callable as a pipeline function).

    Parameters
    ----------
    default_model : str, optional
        The bundle used when the options name none.
    name : str
        The pipeline's name when the request carries none (result UIDs derive from it).
    reference_preference : sequence of str
        Which sequence's grid is the reference among equally fine ones.
    """

    def __init__(self, default_model: str | None = None, name: str = "segmentation",
                 reference_preference: Sequence[str] = REFERENCE_PREFERENCE) -> None:
        self.default_model = default_model
        self.name = name
        self.reference_preference = tuple(reference_preference)

    def model_ref(self, options: dict[str, Any]) -> str:
        """The bundle name or folder the options ask for (or the default).

        Raises
        ------
        ValueError
            If neither the options nor the pipeline name a model.
        """
        model = options.get("model") or self.default_model
        if not model:
            raise ValueError(f"pipeline {self.name!r}: options.model must name a model bundle.")
        return str(model)

    @staticmethod
    def search_paths(options: dict[str, Any]) -> list[str | Path] | None:
        """Extra bundle folders from ``options.models_dir``."""
        return [options["models_dir"]] if options.get("models_dir") else None

    def card(self, options: dict[str, Any]) -> Card:
        """The model card the options select (no network loaded); see :func:`load_card`."""
        return load_card(self.model_ref(options), self.search_paths(options))

    def needs(self, options: dict[str, Any], required: Sequence[str] = (), optional: Sequence[str] = (),
              where: str | None = None) -> SequenceNeeds:
        """The card's sequences narrowed by the configuration's (see :func:`~dicom_node.pipelines.analysis.combine_needs`)."""
        card = self.card(options)
        return combine_needs(card.required_sequences, card.channels, required, optional, where or f"pipeline {self.name!r}")

    def warmup(self, options: dict[str, Any], device: str = "auto") -> None:
        """Load the model (and the sequence classifier identification uses) before the first study.

        A warm worker calls this once at start; later jobs find both warm.

        Parameters
        ----------
        options : dict
            The pipeline's options.
        device : str
            Where the model runs.

        Raises
        ------
        ValueError
            If the bundle cannot be found or loaded.
        """
        load_model(self.model_ref(options), device, self.search_paths(options), options.get("overlap"))
        if options.get("use_pixels", True):
            from dicom_node.identify.series import default_classifier

            default_classifier()

    def __call__(self, request: PipelineRequest) -> PipelineResult:
        """Segment one study and write SEG + SR under ``request.out_dir``.

        Parameters
        ----------
        request : PipelineRequest
            The study (``analysis`` when a worker analysed it already), output folder,
            options, device, and the sequences it may use (``needs``).

        Returns
        -------
        PipelineResult
            SEG and SR (or an SR alone saying what was missing) and a summary: sequences
            used, missing, volume per label (mL), seconds per stage.

        Raises
        ------
        ValueError
            If the bundle cannot be found or loaded (``BundleError``) or no series of the
            study can be read.
        """
        from dicom_node.io.codes import algorithm_from_card, segments_from_card
        from dicom_node.io.seg import write_seg
        from dicom_node.io.sr import segment_bidimensional, segment_volumes_ml, write_measurement_report
        from dicom_node.pipelines.notrun import write_not_run_report
        from dicom_node.pipelines.uids import result_uids

        opts = dict(request.options)
        seconds: dict[str, float] = {}
        t = time.perf_counter()
        analysis = request.analysis
        if analysis is None:
            analysis = analyse_study(request.study_uid, request.instance_paths, use_pixels=bool(opts.get("use_pixels", True)))
            seconds["identify"] = time.perf_counter() - t
        card = self.card(opts)
        needs = request.needs or combine_needs(card.required_sequences, card.channels, where=f"pipeline {self.name!r}")
        name = request.name or self.name
        algorithm = algorithm_from_card(card)
        uids = result_uids(request.study_uid, card.name, card.version, name)

        t = time.perf_counter()
        volumes = analysis.volumes(needs.usable)
        seconds["read"] = time.perf_counter() - t
        unreadable = analysis.unreadable(needs.usable)
        absent = [s for s in needs.usable if s not in volumes]
        summary: dict[str, Any] = {
            "model": card.name,
            "model_version": card.version,
            "sequences_found": analysis.sequences_found(),
            "sequences_used": {lab: volumes[lab].meta.get("series_description") or "" for lab in volumes},
            "missing": absent,
            "unreadable": unreadable,
            "needs": needs.to_dict(),
            "seconds": seconds,
        }
        out_dir = Path(request.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if not needs.runnable(volumes):
            sr_path, notes, missing = write_not_run_report(analysis, needs, volumes, algorithm, out_dir, uids,
                                                           f"Model {card.name} {card.version}")
            summary.update(not_run=notes[0], missing=missing)
            return PipelineResult(outputs=[sr_path], summary=summary)

        ref_label = reference_label(volumes, self.reference_preference)
        reference = volumes[ref_label]
        model = load_model(self.model_ref(opts), request.device, self.search_paths(opts), opts.get("overlap"))
        # each volume goes from its own grid straight onto the model grid (one interpolation);
        # the labels come back on the reference series' grid, where the SEG is written
        prediction = model.predict({lab: v.data for lab, v in volumes.items()}, reference.affine,
                                   affines={lab: v.affine for lab, v in volumes.items()}, shape=reference.shape)
        for stage, value in prediction.seconds.items():
            # resampling the inputs is the pipeline's work, not the model's
            seconds["resample" if stage == "resample" else f"model_{stage}"] = value

        t = time.perf_counter()
        segments = segments_from_card(card)
        seg = write_seg(prediction.labels, reference, segments, algorithm, labelmap=bool(opts.get("labelmap", False)),
                        series_instance_uid=uids.seg_series, sop_instance_uid=uids.seg_instance)
        volumes_ml = segment_volumes_ml(prediction.labels, reference, segments)
        notes = [f"Sequences used: {', '.join(sorted(volumes))}."]
        if absent:
            notes.append(f"Not present: {', '.join(absent)}"
                         + (f" ({card.preprocessing['missing_sequences']})." if card.preprocessing.get("missing_sequences") else "."))
        notes.extend(unreadable)
        names = {lab.value: lab.name for lab in card.labels}
        for value, needed in sorted(prediction.not_assessed.items()):
            notes.append(f"{names.get(value, f'Label {value}')} was not assessed: it needs {' or '.join(needed)}, "
                         f"and none was present.")
        if prediction.out_of_distribution:
            notes.append(f"The input looks unlike the model's training data (OOD score {prediction.ood_score:.2f} "
                         f"above {prediction.ood_threshold:.2f}); read the result with care.")
        notes.append(card.intended_use)
        sr = write_measurement_report(
            seg=seg, reference=reference, source_volumes=list(volumes.values()), segment_volumes_ml=volumes_ml,
            identifications=[r for r in analysis.rows if r.series_uid], algorithm=algorithm, notes=notes,
            bidimensional=segment_bidimensional(prediction.labels, reference, segments),
            series_instance_uid=uids.sr_series, sop_instance_uid=uids.sr_instance,
        )
        seg_path, sr_path = out_dir / "seg.dcm", out_dir / "sr.dcm"
        seg.save_as(seg_path)
        sr.save_as(sr_path)
        seconds["write"] = time.perf_counter() - t
        summary.update(
            reference_series=uid_tag(reference.series_uid),
            reference_sequence=ref_label,
            device=prediction.device,
            volumes_ml={s.label: round(volumes_ml[n], 3) for n, s in enumerate(segments, start=1)},
            total_ml=round(sum(volumes_ml.values()), 3),
            ood_score=prediction.ood_score,
            ood_threshold=prediction.ood_threshold,
        )
        log.info("%s pipeline on study %s: %s, %.2f mL", name, uid_tag(request.study_uid), card.name, summary["total_ml"])
        return PipelineResult(outputs=[seg_path, sr_path], summary=summary)


#: The generic pipeline: ``options.model`` names the bundle.
run = SegmentationPipeline(name="segmentation")
