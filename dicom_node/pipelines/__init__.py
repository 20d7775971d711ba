"""Pipelines: pluggable functions that turn a completed study into result DICOM objects.

A pipeline is a plain function ``run(request: PipelineRequest) -> PipelineResult``
referenced from the node configuration as ``"package.module:function"``. Worker processes
import it by that reference, so it must be importable at module level and must not rely
on state of the parent process. The receive path never imports pipeline modules.

A worker analyses each study once (:mod:`dicom_node.pipelines.analysis`) and hands the
result to every pipeline as ``request.analysis``; a pipeline must also work without it
(``None``: run alone, e.g. by ``mrinode infer``). A pipeline may offer a model card: a
``card(options)`` attribute returning a :class:`models.bundle.Card` (see
:class:`~dicom_node.pipelines.segmentation.SegmentationPipeline`); its sequences then
decide whether the pipeline runs on a study (:func:`pipeline_needs`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicom_node.pipelines.analysis import SequenceNeeds, StudyAnalysis

__all__ = ["PipelineFunction", "PipelineRequest", "PipelineResult", "pipeline_needs", "resolve_pipeline"]


@dataclass(frozen=True)
class PipelineRequest:
    """What a worker hands to a pipeline.

    Attributes
    ----------
    study_uid : str
        The Study Instance UID.
    instance_paths : list of Path
        Every spooled instance of the study (original files, original transfer syntax).
    out_dir : Path
        An empty folder the pipeline writes its result DICOM files into.
    options : dict
        The ``options`` table of the pipeline's entry in the node configuration.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    analysis : StudyAnalysis or None
        The study's headers, identification and volumes, made once for every pipeline
        (``None``: the pipeline analyses the study itself).
    needs : SequenceNeeds or None
        The sequences this pipeline requires and may use (its card narrowed by the
        configuration); ``None``: the pipeline's own (its card's).
    name : str
        The pipeline's configured name (result UIDs derive from it); empty: its default.
    """

    study_uid: str
    instance_paths: list[Path]
    out_dir: Path
    options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    analysis: StudyAnalysis | None = None
    needs: SequenceNeeds | None = None
    name: str = ""


@dataclass
class PipelineResult:
    """What a pipeline returns.

    Attributes
    ----------
    outputs : list of Path
        DICOM Part 10 files written under ``out_dir``, to be exported.
    summary : dict
        JSON-serialisable facts for the job record and the REST API (sequences found,
        segment volumes, seconds per stage, what was missing).
    """

    outputs: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


PipelineFunction = Callable[[PipelineRequest], PipelineResult]


def resolve_pipeline(reference: str) -> PipelineFunction:
    """Import a pipeline function from its ``"module:function"`` reference.

    Parameters
    ----------
    reference : str
        For example ``"dicom_node.pipelines.tumour:run"``.

    Returns
    -------
    callable
        The pipeline function.

    Raises
    ------
    ValueError
        If the reference is malformed, the module cannot be imported or the attribute is
        missing or not callable; the message names the reference.
    """
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"pipeline function {reference!r} must look like 'package.module:function'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"pipeline function {reference!r}: module {module_name!r} cannot be imported ({exc}).") from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ValueError(f"pipeline function {reference!r}: {module_name!r} has no callable {attr!r}.")
    result: PipelineFunction = fn
    return result


def pipeline_needs(fn: PipelineFunction, options: dict[str, Any], required: list[str] | tuple[str, ...] = (),
                   optional: list[str] | tuple[str, ...] = (), where: str = "pipeline") -> tuple[SequenceNeeds, Any]:
    """The sequences a pipeline needs: its card's (if it offers one) narrowed by the configuration's.

    Parameters
    ----------
    fn : callable
        The pipeline function; one with a ``card(options)`` attribute offers a model card.
    options : dict
        The pipeline's options.
    required, optional : sequence of str
        The ``[[pipelines]]`` entry's ``required_sequences`` and ``optional_sequences``.
    where : str
        Names the pipeline in error messages.

    Returns
    -------
    (SequenceNeeds, Card or None)

    Raises
    ------
    ValueError
        If the card cannot be read (``models.bundle.BundleError``) or the configuration lists
        a sequence the model does not take.
    """
    from dicom_node.pipelines.analysis import combine_needs

    card_of = getattr(fn, "card", None)
    card = card_of(dict(options)) if callable(card_of) else None
    if card is None:
        return combine_needs(None, None, required, optional, where), None
    return combine_needs(card.required_sequences, card.channels, required, optional, where), card
