"""End-to-end benchmark: seconds from the last instance stored in Orthanc to SEG and SR
stored in Orthanc, per stage, for a 4-sequence synthetic brain study, and the share of
that spent outside the model, for the first study after the node's start (cold: the warm
worker loads the model) and for the next ones (warm: the model is already loaded).

Runs the demo's real services (Orthanc with the mrinode plugin, ``mrinode serve`` with
``deploy/demo/node.toml``) in a private network namespace ``mrinode-bench`` (needs root,
like ``make demo``), sends the study with dcmtk ``storescu`` and reads the stage times
from Orthanc, the plugin and the node's job. The anchor, measured in the same run, is
the model's own forward time (the pipeline's ``model_*`` stages): the table gives every
stage as a ratio to it.

``python -m bench.e2e [--quick]``: the full run sends five copies (new UIDs each) one after
the other: the first is the cold figure, the median of the other four the warm one; ``--quick``
sends two (one cold, one warm). The peak resident memory of the node's worker processes
(``VmHWM``) is reported too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Parameters
    ----------
    argv : sequence of str, optional
        ``--quick`` for two studies (cold, warm) instead of five; ``--var DIR`` for the working folder (default
        ``var/bench-e2e``); ``--netns NAME``.

    Returns
    -------
    int
        0 on success, 1 when the loop did not complete (the reason is printed).
    """
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two studies (cold, warm) instead of five")
    parser.add_argument("--var", default="var/bench-e2e", help="working folder (default var/bench-e2e)")
    parser.add_argument("--netns", default="mrinode-bench", help="network namespace (default mrinode-bench)")
    parser.add_argument("--seed", type=int, default=11, help="seed of the synthetic study")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for one study")
    parser.add_argument("--node-config", default=None, help="node configuration template (default deploy/demo/node.toml)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dicom_node.demo import start_services
    from dicom_node.demo.netns import delete_netns
    from dicom_node.demo.scenario import (
        LoopTimes,
        OrthancClient,
        copy_study,
        model_seconds,
        pipeline_breakdown,
        send_with_storescu,
        stage_table,
        synth_study,
        wait_for_results,
    )
    from dicom_node.demo.services import DemoPaths, stop_all

    root = Path(__file__).resolve().parents[1]
    paths = DemoPaths(root=root, var=Path(args.var).absolute())
    paths.var.mkdir(parents=True, exist_ok=True)
    stop_all(paths)
    study_dir = paths.var / f"study-seed{args.seed}"
    marker = study_dir / ".complete"
    if marker.exists():
        source = Path(marker.read_text().strip())
    else:
        print(f"bench.e2e: generating the synthetic study (seed {args.seed}) ...", flush=True)
        source = synth_study(study_dir, seed=args.seed)
        marker.write_text(str(source))
    n_runs = 2 if args.quick else 5
    runs: list[tuple[list[tuple[str, float]], float, int]] = []
    breakdowns: list[list[tuple[str, float]]] = []
    try:
        svc = start_services(paths, netns=args.netns, node_config=Path(args.node_config) if args.node_config else None)
        orthanc = OrthancClient(f"http://127.0.0.1:{svc['http_port']}", svc["user"], svc["password"])
        for i in range(n_runs):
            copy_dir = paths.var / f"send-{i}"
            study_uid, files = copy_study(source, copy_dir)
            times = LoopTimes(study_uid=study_uid, sent_start=time.time())
            send_with_storescu(copy_dir, svc["dicom_port"])
            times.stored = time.time()
            wait_for_results(orthanc, times, timeout=args.timeout, poll=0.05)  # arrival seen within 50 ms
            runs.append((stage_table(times), model_seconds(times), len(files)))
            breakdowns.append(breakdown(times.job, pipeline_breakdown(times)))
            print(f"bench.e2e: study {i + 1}/{n_runs}: {runs[-1][0][-1][1]:.1f} s", flush=True)
        peak_rss = worker_peak_rss_mb(int(paths.pid("node").read_text()))
        orthanc.close()
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"bench.e2e: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all(paths)
        delete_netns(args.netns)
    print_table(runs, breakdowns, peak_rss)
    return 0


def breakdown(job: dict[str, Any], stages: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The pipeline's stages, the study's identification, and the rest of the worker's time.

    Parameters
    ----------
    job : dict
        The node's job (``durations``: ``pipeline_s`` and ``analysis_identify_s``).
    stages : list of (str, float)
        :func:`dicom_node.demo.scenario.pipeline_breakdown`'s rows (its last row, the rest, is recomputed).

    Returns
    -------
    list of (str, float)
        Stage name and seconds.
    """
    durations = job.get("durations") or {}
    # the pipeline's own "read" is ~0 when the worker's analysis read the volumes already
    rows = [(name, v) for name, v in stages if not name.startswith("worker") and name != "read"]
    once = [("read pixels (once per study)", "analysis_read_s"), ("identify (once per study)", "analysis_identify_s"),
            ("read headers (once per study)", "analysis_headers_s")]
    for label, key in once:
        if key in durations:
            rows.insert(0, (label, float(durations[key])))
    pipeline = float(durations.get("pipeline_s", 0.0))
    if rows and pipeline:
        rows.append(("worker: rest (cold: imports, load)", max(0.0, pipeline - sum(v for _, v in rows))))
    return rows


def worker_peak_rss_mb(node_pid: int) -> list[float]:
    """Peak resident memory (``VmHWM``, MiB) of each child process of the node (its workers)."""
    from dicom_node.workers.process import memory_mb

    pids: list[int] = []
    for task in Path(f"/proc/{node_pid}/task").glob("*"):
        try:
            pids += [int(x) for x in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return [memory_mb(pid, "VmHWM") for pid in sorted(pids)]


def _row(name: str, cold: float, warm: float, model: float, total: float) -> str:
    ratio = f"{warm / model:8.2f}" if model > 0 else "     n/a"
    share = f"{100 * warm / total:5.0f}%" if total > 0 else "   n/a"
    return f"| {name:<52} | {cold:8.1f} | {warm:8.1f} | {ratio} | {share} |"


def print_table(runs: list[tuple[list[tuple[str, float]], float, int]], breakdowns: list[list[tuple[str, float]]],
                peak_rss: list[float]) -> None:
    """Print the cold (first study) and warm (median of the others) table.

    Parameters
    ----------
    runs : list
        Per study: the stage table, the model's seconds and the number of instances.
    breakdowns : list
        Per study: the pipeline's own stages.
    peak_rss : list of float
        Peak resident memory of each worker process (MiB).
    """
    names = [name for name, _ in runs[0][0]]
    warm_runs = runs[1:] or runs
    cold = {name: runs[0][0][k][1] for k, name in enumerate(names)}
    warm = {name: statistics.median(r[0][k][1] for r in warm_runs) for k, name in enumerate(names)}
    model_cold, model = runs[0][1], statistics.median(r[1] for r in warm_runs)
    total = warm[names[-1]]
    print()
    print(f"End to end, {runs[0][2]} instances (4 sequences): cold = the first study after the node's start, "
          f"warm = median of {len(warm_runs)} later one(s); anchor = warm model forward {model:.1f} s")
    print(f"| {'stage':<52} | {'cold s':>8} | {'warm s':>8} | {'x model':>8} | {'share':>6} |")
    print(f"|{'-' * 54}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 8}|")
    for name in names:
        print(_row(name, cold[name], warm[name], model, total))
    sub = breakdowns[0] if breakdowns and all(len(b) == len(breakdowns[0]) for b in breakdowns) else []
    warm_breakdowns = breakdowns[1:] or breakdowns
    for k, (name, value) in enumerate(sub):
        print(_row("  pipeline: " + name, value, statistics.median(b[k][1] for b in warm_breakdowns), model, total))
    if model > 0 and total > 0:
        print(_row("of which the model forward (anchor)", model_cold, model, model, total))
        outside = total - model
        print(f"Warm: {total:.1f} s end to end = {total / model:.2f} x the model forward (target <= 2); "
              f"{outside:.1f} s outside the model (target <= 3 s); cold {cold[names[-1]]:.1f} s.")
    if peak_rss:
        print("Peak worker RSS: " + ", ".join(f"{mb:.0f} MiB" for mb in peak_rss))


if __name__ == "__main__":
    sys.exit(main())
