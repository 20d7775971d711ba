"""One job's analysis in a worker process: the study's pipelines, run on its instances.

:func:`run_spec` is what a worker process (today one child per job, see
:mod:`dicom_node.worker`) runs for a job spec; the process and its supervision are not here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["run_spec"]


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the pipelines of one job spec (in the child process).

    Parameters
    ----------
    spec : dict
        ``study_uid``, ``instance_paths``, ``out_dir``, ``device`` and ``pipelines``
        (a list of ``{"name", "function", "options"}``).

    Returns
    -------
    dict
        ``{"outputs": [paths], "summary": {pipeline name: summary}, "seconds": {name: s}}``.

    Raises
    ------
    Exception
        Whatever a pipeline raises (the child reports it and exits non-zero).
    """
    from dicom_node.pipelines import PipelineRequest, resolve_pipeline

    out_root = Path(spec["out_dir"])
    outputs: list[str] = []
    summary: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for p in spec["pipelines"]:
        fn = resolve_pipeline(p["function"])
        out_dir = out_root / p["name"]
        out_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        result = fn(PipelineRequest(
            study_uid=spec["study_uid"], instance_paths=[Path(x) for x in spec["instance_paths"]],
            out_dir=out_dir, options=dict(p.get("options") or {}), device=spec.get("device", "auto"),
        ))
        seconds[p["name"]] = time.perf_counter() - t0
        for o in result.outputs:
            if not Path(o).is_file():
                raise RuntimeError(f"pipeline {p['name']!r} listed output {str(o)!r}, which is not a file")
            outputs.append(str(Path(o).resolve()))
        summary[p["name"]] = result.summary
    return {"outputs": outputs, "summary": summary, "seconds": seconds}
