"""One job's analysis in a worker process: the study analysed once, then the pipelines it allows.

:func:`run_spec` is what a worker process runs for a job spec; the process and its
supervision are not here (:mod:`dicom_node.worker`). Steps:

1. every enabled pipeline's needs: its model card's sequences (when it offers a card)
   narrowed by the ``[[pipelines]]`` entry's ``required_sequences``/``optional_sequences``
   (:func:`dicom_node.pipelines.pipeline_needs`);
2. one analysis of the study (:func:`dicom_node.pipelines.analysis.analyse_study`): headers
   read once, every series identified once, chosen series read once (skipped when no
   pipeline's sequences matter, e.g. the test pipeline alone: ``request.analysis`` is None);
3. the pipelines whose needs the study meets run, each handed the analysis (volumes shared,
   resampled once per reference grid); the others are skipped, with the reason in the
   summary;
4. when no pipeline could run, each skipped one writes the SR that says what was missing
   (never silence), with the UIDs its result would have had.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from dicom_node.logs import uid_tag

__all__ = ["run_spec"]

log = logging.getLogger(__name__)

#: One pipeline's plan: its spec entry, function, options, needs and card (or None).
_Plan = tuple[dict[str, Any], Any, dict[str, Any], Any, Any]


def _not_run_sr(analysis: Any, entry: dict[str, Any], needs: Any, card: Any, out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The "missing sequences" SR of one skipped pipeline."""
    from dicom_node.io.codes import AlgorithmSpec, algorithm_from_card
    from dicom_node.pipelines.notrun import write_not_run_report
    from dicom_node.pipelines.uids import result_uids

    name = str(entry["name"])
    if card is not None:
        algorithm = algorithm_from_card(card)
        uids = result_uids(analysis.study_uid, card.name, card.version, name)
        what = f"Model {card.name} {card.version}"
    else:
        algorithm = AlgorithmSpec(name=name, version="n/a", source="mrinode")
        uids = result_uids(analysis.study_uid, name, "n/a", name)
        what = f"Pipeline {name}"
    present = analysis.volumes(needs.usable)
    path, notes, missing = write_not_run_report(analysis, needs, present, algorithm, out_dir, uids, what)
    return path, {"not_run": notes[0], "missing": missing}


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Analyse one job's study once and run the pipelines it allows (in the worker process).

    Parameters
    ----------
    spec : dict
        ``study_uid``, ``instance_paths``, ``out_dir``, ``device`` and ``pipelines`` (a list
        of ``{"name", "function", "options"}``, optionally ``"required_sequences"`` and
        ``"optional_sequences"`` from the configuration); optionally ``use_pixels`` (default:
        true unless a pipeline's options say ``use_pixels = false``).

    Returns
    -------
    dict
        ``{"outputs": [paths], "summary": {pipeline name: summary}, "seconds": {name: s},
        "analysis": {"seconds", "sequences_found", "ran", "skipped"}}``; a skipped
        pipeline's summary is ``{"skipped": reason, "needs": ...}`` (plus ``not_run`` and
        ``missing`` when its SR was written).

    Raises
    ------
    Exception
        Whatever a pipeline raises; ``ValueError`` for a pipeline whose card cannot be read
        or whose configured sequences the card does not take, or a study none of whose
        series can be read (the worker reports it and the job fails).
    """
    from dicom_node.pipelines import PipelineRequest, pipeline_needs, resolve_pipeline
    from dicom_node.pipelines.analysis import analyse_study

    t_all = time.perf_counter()
    out_root = Path(spec["out_dir"])
    plans: list[_Plan] = []
    for p in spec["pipelines"]:
        fn = resolve_pipeline(p["function"])
        options = dict(p.get("options") or {})
        needs, card = pipeline_needs(fn, options, list(p.get("required_sequences") or ()),
                                     list(p.get("optional_sequences") or ()), where=f"pipeline {p['name']!r}")
        plans.append((p, fn, options, needs, card))
    analysis = None
    if any(needs.required or needs.usable for _, _, _, needs, _ in plans):
        # identification only when a pipeline's sequences matter (not for the test pipeline alone)
        use_pixels = bool(spec.get("use_pixels", all(bool(o.get("use_pixels", True)) for _, _, o, _, _ in plans)))
        analysis = analyse_study(spec["study_uid"], [Path(x) for x in spec["instance_paths"]], use_pixels=use_pixels)

    runnable: list[_Plan] = []
    skipped: list[_Plan] = []
    for plan in plans:
        needs = plan[3]
        present = analysis.volumes(needs.usable) if analysis is not None else {}
        (runnable if needs.runnable(present) else skipped).append(plan)

    outputs: list[str] = []
    summary: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    if analysis is not None:  # else nothing is skipped: no pipeline's sequences matter
        for p, _, _, needs, _ in skipped:
            present = analysis.volumes(needs.usable)
            summary[p["name"]] = {"needs": needs.to_dict(),
                                  "skipped": f"needs {needs.describe()}; found {', '.join(sorted(present)) or 'none of them'}"}
        if not runnable:
            for p, _, _, needs, card in skipped:
                path, facts = _not_run_sr(analysis, p, needs, card, out_root / p["name"])
                outputs.append(str(path.resolve()))
                summary[p["name"]].update(facts)
    for p, fn, options, needs, _ in runnable:
        out_dir = out_root / p["name"]
        out_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        result = fn(PipelineRequest(
            study_uid=spec["study_uid"], instance_paths=[Path(x) for x in spec["instance_paths"]],
            out_dir=out_dir, options=options, device=spec.get("device", "auto"), analysis=analysis, needs=needs,
            name=str(p["name"]),
        ))
        seconds[p["name"]] = time.perf_counter() - t0
        for o in result.outputs:
            if not Path(o).is_file():
                raise RuntimeError(f"pipeline {p['name']!r} listed output {str(o)!r}, which is not a file")
            outputs.append(str(Path(o).resolve()))
        summary[p["name"]] = result.summary
    ran = [p["name"] for p, *_ in runnable]
    log.info("study %s: ran %s; skipped %s", uid_tag(spec["study_uid"]), ", ".join(ran) or "none",
             ", ".join(p["name"] for p, *_ in skipped) or "none")
    return {
        "outputs": outputs,
        "summary": summary,
        "seconds": seconds,
        "analysis": {
            "seconds": {**(analysis.seconds if analysis is not None else {}), "total": time.perf_counter() - t_all},
            "sequences_found": analysis.sequences_found() if analysis is not None else {},
            # every series as identified (for the console; UIDs as tags, like every file the node writes)
            "series": [{"series": uid_tag(r.series_uid), "label": str(r.label), "confidence": round(r.confidence, 3),
                        "description": r.description} for r in analysis.rows] if analysis is not None else [],
            "ran": ran,
            "skipped": [p["name"] for p, *_ in skipped],
        },
    }
