"""Scale-out on Celery + RabbitMQ: studies per hour with 1 and 2 remote workers, and the engine's overhead per job.

In one run, against one private RabbitMQ and one Orthanc (the export destination), the same
studies go through four nodes in turn: the embedded engine (SQLite queue, local warm
workers; the anchor) with 1 and 2 workers, and ``[scale] engine = "celery"`` with 1 and 2
``mrinode worker`` processes, each in its own folder, fetching over WADO-RS and uploading
its results to the node. Every study is exported to Orthanc before it counts.

How the model work, not the 2 cores, is the limit: the pipeline is the test pipeline (a
threshold SEG of 3 slices of 32², a few ms) with ``sleep_s`` (default 2 s): each job holds
its worker for the sleep, like a model waiting on a GPU, while the CPUs stay nearly idle,
so two workers can do twice the work of one if the engine lets them. The ceiling of one
worker is ``3600 / sleep_s`` studies per hour.

Figures per engine:

- throughput: N studies sent by one ``storescu``, completed at once; studies/hour from the
  first completion to the last job ``done`` (exported);
- overhead per job (1 worker, one study at a time, median of K): *enqueue → worker start*
  (job created → the worker starts it: the local pool's claim; for Celery the dispatcher's
  claim, the broker and the worker's ``start`` call), *fetch* (WADO-RS of the study, Celery
  only), *result back → export start* (the run ended → the exporter starts: for Celery the
  upload of the results and the node's acceptance), and *all* = created → done minus the
  pipeline's own run and the export's own time.

``python -m bench.scale [--quick] [--studies N] [--sleep S] [--repeats K]``; it runs inside a
private network namespace (``tests/netns.sh``) when it can.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TCP_NODELAY="1")
TOKEN = "bench-scale-token"


@dataclass
class Result:
    """One engine's figures."""

    engine: str
    workers: int
    studies: int = 0
    seconds: float = 0.0
    dispatch_s: list[float] = field(default_factory=list)
    fetch_s: list[float] = field(default_factory=list)
    back_s: list[float] = field(default_factory=list)
    overhead_s: list[float] = field(default_factory=list)

    @property
    def per_hour(self) -> float:
        return self.studies / self.seconds * 3600.0 if self.seconds else 0.0


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f}" if xs else "-"


class _Bench:
    def __init__(self, tmp: Path, sleep_s: float) -> None:
        from tests.scale.broker import RabbitBroker
        from tests.support.orthanc import OrthancServer

        self.tmp = tmp
        self.sleep_s = sleep_s
        self.pipeline = {"name": "test-threshold-seg", "function": "dicom_node.pipelines.testing:run",
                         "options": {"threshold_fraction": 0.5, "sleep_s": sleep_s}}
        self.broker = RabbitBroker(tmp / "rabbitmq")
        self.orthanc = OrthancServer(tmp / "orthanc")
        self.count = 0

    def _studies(self, n: int) -> tuple[Path, list[str]]:
        from tests.support.mrfiles import write_mr_series

        root = self.tmp / f"in{self.count}"
        self.count += 1
        uids = [write_mr_series(root / f"s{i:03d}", 3, size=32)[0] for i in range(n)]
        return root, uids

    def _send(self, node: Any, n: int) -> tuple[list[str], float]:
        root, uids = self._studies(n)
        r = subprocess.run(["storescu", "-aec", node.ae_title, "+sd", "+r", "127.0.0.1", str(node.dicom_port),
                            str(root)], env=ENV, capture_output=True, text=True, check=False, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"storescu failed: {r.stderr[-500:]}")
        t0 = time.time()
        for uid in uids:
            node.api("POST", f"/studies/{uid}/complete").raise_for_status()
        return uids, t0

    @staticmethod
    def _wait_done(node: Any, uids: list[str], timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        want = set(uids)
        while time.monotonic() < deadline:
            jobs = [j for j in node.api("GET", "/jobs", params={"limit": 1000}).json() if j["study_uid"] in want]
            if len(jobs) == len(want) and all(j["state"] in ("done", "failed") for j in jobs):
                failed = [j for j in jobs if j["state"] == "failed"]
                if failed:
                    raise RuntimeError(f"{len(failed)} job(s) failed: {failed[0]['last_error']}\n{node.log_tail()}")
                return jobs
            time.sleep(0.1)
        raise RuntimeError(f"jobs not done within {timeout:.0f} s\n{node.log_tail()}")

    def run(self, engine: str, workers: int, studies: int, repeats: int) -> Result:
        from tests.scale.workers import WorkerProcess, scale_section
        from tests.support.node import NodeProcess

        res = Result(engine, workers)
        extra: dict[str, Any] = {"routing": {"default_destinations": ["pacs"]},
                                 "workers": {"count": workers, "device": "cpu"}}
        if engine == "celery":
            extra["scale"] = scale_section(self.broker.url)
        with ExitStack() as stack:
            node = NodeProcess(self.tmp / f"node-{engine}-{workers}", token=TOKEN, pipelines=[self.pipeline],
                               destinations=[{"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC",
                                              "host": "127.0.0.1", "port": self.orthanc.dicom_port}],
                               extra=extra)
            stack.enter_context(node)
            if engine == "celery":
                for i in range(workers):
                    w = WorkerProcess(self.tmp / f"worker-{workers}-{i}", f"w{i}", broker_url=self.broker.url,
                                      node_url=node.url, token=TOKEN, pipelines=[self.pipeline])
                    stack.callback(w.kill9)
                    w.start()
            # warm-up: every worker process started, imports done (not measured)
            uids, _ = self._send(node, workers)
            self._wait_done(node, uids, 300)
            if workers == 1:
                for _ in range(repeats):
                    uids, _ = self._send(node, 1)
                    job = self._wait_done(node, uids, 300)[0]
                    self._overhead(node, job, res)
            uids, t0 = self._send(node, studies)
            jobs = self._wait_done(node, uids, 60 + studies * self.sleep_s * 3)
            res.studies = len(jobs)
            res.seconds = max(j["finished_at"] for j in jobs) - t0
        return res

    @staticmethod
    def _overhead(node: Any, job: dict[str, Any], res: Result) -> None:
        d = job["durations"]
        export_start = job["finished_at"] - d["export_s"]
        res.overhead_s.append(job["finished_at"] - job["created_at"] - d["pipeline_s"] - d["export_s"])
        res.dispatch_s.append(job["started_at"] - job["created_at"])
        if res.engine == "celery":
            with sqlite3.connect(node.data_dir / "node.db") as c:
                run_done = c.execute("SELECT run_done_at FROM scale_tasks WHERE job_id=? ORDER BY sent_at DESC",
                                     (job["id"],)).fetchone()[0]
            res.fetch_s.append(d.get("fetch_s", 0.0))
            res.back_s.append(export_start - run_done)
        else:
            res.back_s.append(export_start - (job["started_at"] + d["pipeline_s"]))


def _print(results: list[Result], sleep_s: float, boot_s: float) -> None:
    ceiling = 3600.0 / sleep_s
    print(f"\nPipeline: test SEG + sleep {sleep_s:g} s per study (one worker's ceiling {ceiling:.0f} studies/h); "
          f"RabbitMQ booted in {boot_s:.1f} s; 2 CPU cores")
    print(f"\n{'engine':<22} {'workers':>7} {'studies':>7} {'seconds':>8} {'studies/h':>10} {'x 1 worker':>10} "
          f"{'of ceiling':>10}")
    base = {r.engine: r.per_hour for r in results if r.workers == 1}
    for r in results:
        name = "embedded (SQLite)" if r.engine == "local" else "celery + RabbitMQ"
        print(f"{name:<22} {r.workers:>7} {r.studies:>7} {r.seconds:>8.1f} {r.per_hour:>10.0f} "
              f"{r.per_hour / base[r.engine]:>10.2f} {r.per_hour / (ceiling * r.workers):>10.0%}")
    print(f"\nOverhead per job, 1 worker, one study at a time (median of {len(results[0].overhead_s)}; seconds)")
    print(f"{'engine':<22} {'enqueue->worker start':>22} {'fetch (WADO-RS)':>16} {'result back->export':>20} "
          f"{'all overhead':>13}")
    for r in results:
        if r.workers != 1:
            continue
        name = "embedded (SQLite)" if r.engine == "local" else "celery + RabbitMQ"
        print(f"{name:<22} {_med(r.dispatch_s):>22} {_med(r.fetch_s):>16} {_med(r.back_s):>20} {_med(r.overhead_s):>13}")
    loc = next((r for r in results if r.engine == "local" and r.workers == 1), None)
    cel = next((r for r in results if r.engine == "celery" and r.workers == 1), None)
    if loc and cel and loc.overhead_s and cel.overhead_s:
        extra = statistics.median(cel.overhead_s) - statistics.median(loc.overhead_s)
        print(f"\nCelery's overhead beyond the embedded queue's: {extra:+.3f} s per job (target <= 0.5 s)")
    two = {r.engine: r.per_hour for r in results if r.workers == 2}
    if "celery" in two and "celery" in base:
        print(f"Celery 2 workers / 1 worker: {two['celery'] / base['celery']:.2f} x (target >= 1.6 x); "
              f"embedded anchor: {two.get('local', 0.0) / base.get('local', 1.0):.2f} x")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scale-out benchmark and print its tables.

    Parameters
    ----------
    argv : sequence of str, optional
        ``--quick`` (6 studies, sleep 1 s, 3 repeats), ``--studies N``, ``--sleep S``, ``--repeats K``.

    Returns
    -------
    int
        0 on success.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--studies", type=int, default=16)
    parser.add_argument("--sleep", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(list(argv) if argv is not None else None)
    for tool in ("storescu", "/usr/sbin/Orthanc", "/usr/lib/rabbitmq/bin/rabbitmq-server"):
        if shutil.which(tool) is None:
            print(f"bench.scale: {tool} is not installed (run `make setup`).", file=sys.stderr)
            return 1
    if os.environ.get("MRINODE_IN_NETNS") != "1" and os.geteuid() == 0:
        passed = list(argv) if argv is not None else sys.argv[1:]
        cmd = [str(ROOT / "tests" / "netns.sh"), sys.executable, "-m", "bench.scale", *passed]
        return subprocess.run(cmd, cwd=ROOT, env=ENV, check=False).returncode
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    studies, sleep_s, repeats = (6, 1.0, 3) if args.quick else (args.studies, args.sleep, args.repeats)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as d:
        bench = _Bench(Path(d), sleep_s)
        with bench.broker, bench.orthanc:
            results = [bench.run(engine, n, studies, repeats) for engine in ("local", "celery") for n in (1, 2)]
            boot_s = bench.broker.boot_s
    _print(results, sleep_s, boot_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
