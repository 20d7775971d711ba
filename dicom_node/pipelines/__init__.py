"""Pipelines: pluggable functions that turn a completed study into result DICOM objects.

A pipeline is a plain function ``run(request: PipelineRequest) -> PipelineResult``
referenced from the node configuration as ``"package.module:function"``. Worker processes
import it by that reference, so it must be importable at module level and must not rely
on state of the parent process. The receive path never imports pipeline modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PipelineFunction", "PipelineRequest", "PipelineResult", "resolve_pipeline"]


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
    """

    study_uid: str
    instance_paths: list[Path]
    out_dir: Path
    options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"


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
