"""End-to-end benchmark: seconds from the last instance stored in Orthanc to SEG and SR
stored in Orthanc, per stage, for a 4-sequence synthetic brain study, and the share of
that spent outside the model.

Runs the demo's real services (Orthanc with the mrinode plugin, ``mrinode serve`` with
``deploy/demo/node.toml``) in a private network namespace ``mrinode-bench`` (needs root,
like ``make demo``), sends the study with dcmtk ``storescu`` and reads the stage times
from Orthanc, the plugin and the node's job. The anchor, measured in the same run, is
the model's own forward time (the pipeline's ``model_*`` stages): the table gives every
stage as a ratio to it.

``python -m bench.e2e [--quick]``: ``--quick`` sends one study; the full run sends three
copies (new UIDs each) one after the other and reports the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Parameters
    ----------
    argv : sequence of str, optional
        ``--quick`` for one study; ``--var DIR`` for the working folder (default
        ``var/bench-e2e``); ``--netns NAME``.

    Returns
    -------
    int
        0 on success, 1 when the loop did not complete (the reason is printed).
    """
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one study instead of three")
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
    n_runs = 1 if args.quick else 3
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
            wait_for_results(orthanc, times, timeout=args.timeout)
            runs.append((stage_table(times), model_seconds(times), len(files)))
            breakdowns.append(pipeline_breakdown(times))
            print(f"bench.e2e: study {i + 1}/{n_runs}: {runs[-1][0][-1][1]:.1f} s", flush=True)
        orthanc.close()
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"bench.e2e: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all(paths)
        delete_netns(args.netns)
    names = [name for name, _ in runs[0][0]]
    medians = {name: statistics.median(r[0][k][1] for r in runs) for k, name in enumerate(names)}
    model = statistics.median(r[1] for r in runs)
    total = medians[names[-1]]
    print()
    print(f"End to end, {runs[0][2]} instances (4 sequences), median of {n_runs} run(s); anchor = model forward {model:.1f} s")
    print(f"| {'stage':<52} | {'seconds':>8} | {'x model':>8} | {'share':>6} |")
    print(f"|{'-' * 54}|{'-' * 10}|{'-' * 10}|{'-' * 8}|")
    for name in names:
        ratio = f"{medians[name] / model:8.2f}" if model > 0 else "     n/a"
        share = f"{100 * medians[name] / total:5.0f}%" if total > 0 else "   n/a"
        print(f"| {name:<52} | {medians[name]:8.1f} | {ratio} | {share} |")
    sub = breakdowns[0] if breakdowns and all(len(b) == len(breakdowns[0]) for b in breakdowns) else []
    for k, (name, _) in enumerate(sub):
        value = statistics.median(b[k][1] for b in breakdowns)
        ratio = f"{value / model:8.2f}" if model > 0 else "     n/a"
        share = f"{100 * value / total:5.0f}%" if total > 0 else "   n/a"
        print(f"| {'  pipeline: ' + name:<52} | {value:8.1f} | {ratio} | {share} |")
    if model > 0 and total > 0:
        print(f"| {'of which the model forward (anchor)':<52} | {model:8.1f} | {1.0:8.2f} | {100 * model / total:5.0f}% |")
        print(f"Share of the total spent outside the model: {100 * (1 - model / total):.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
