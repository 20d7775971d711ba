"""The worker process: run job specs, one at a time, with the models kept loaded between jobs.

``python -m dicom_node.workers.child --serve --pipelines JSON --device D`` is the warm worker
the node supervises. At start it imports the configured pipelines and calls the optional
``warmup(options, device)`` of each (a model pipeline loads its model there). Then it reads one job spec per line on stdin, runs
:func:`dicom_node.jobrun.run_spec`, writes ``result.json`` into the job's ``out_dir`` and
answers one JSON line on its stdout::

    {"job_id": 7, "ok": true, "loads": [["brain-tumour-demo", "0.1.0"]], "rss_mb": 812.0, "peak_rss_mb": 900.0}

While a job runs, the process's stdout and stderr (its log, warnings, whatever a library
prints) go to the job's ``worker.log``; between jobs to the stderr it was started with (the
node's log). The answers use a private copy of the original stdout, so nothing a pipeline
prints can corrupt them. End of stdin ends the process; so does the death of its parent.

Without ``--serve`` it runs a single spec read from stdin and exits (non-zero on failure),
as the per-job child did before the warm workers (``python -m dicom_node.worker``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from dicom_node.jobrun import run_spec
from dicom_node.logs import configure_logging
from dicom_node.workers.process import memory_mb

__all__ = ["main", "serve"]

log = logging.getLogger("dicom_node.worker")


def _write_result(spec: dict[str, Any], result: dict[str, Any]) -> None:
    out = Path(spec["out_dir"])
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, out / "result.json")


def drain_model_loads() -> list[tuple[str, str]]:
    """The ``(model, version)`` of each model loaded since the last call.

    Native engines are recorded by the engine's cache itself (``models.engine.LOAD_EVENTS``,
    whether a pipeline called ``get_engine`` or ``models.registry.load_model``); the
    registry's events (``drain_load_events``) add the loads the engine cache did not see
    (MONAI Bundles), each load counted once.

    Returns
    -------
    list of (str, str)
        One entry per load; empty when no model module is in use (nothing is imported here).
    """
    engine_events: list[tuple[str, str]] = []
    engine = sys.modules.get("models.engine")
    if engine is not None and isinstance(getattr(engine, "LOAD_EVENTS", None), list):
        engine_events = [(str(n), str(v)) for n, v in engine.LOAD_EVENTS]
        del engine.LOAD_EVENTS[:]
    registry = sys.modules.get("models.registry")
    drain = getattr(registry, "drain_load_events", None)
    if drain is None:
        return engine_events
    extra = Counter((str(n), str(v)) for n, v in drain()) - Counter(engine_events)
    return engine_events + list(extra.elements())


@contextlib.contextmanager
def _output_to(path: Path, saved_fd: int) -> Iterator[None]:
    """Send this process's fds 1 and 2 to ``path`` (appended), then back to ``saved_fd``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_fd, 1)
        os.dup2(saved_fd, 2)


def _die_with_parent() -> None:
    """Exit when the supervising node is gone (even after a ``kill -9`` of it)."""
    parent = os.getppid()
    with contextlib.suppress(Exception):  # Linux: the kernel sends SIGKILL when the parent dies
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(0)
            time.sleep(1.0)

    if os.getppid() != parent:  # pragma: no cover - the parent died before the prctl
        os._exit(0)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _answer(proto: IO[bytes], message: dict[str, Any]) -> None:
    proto.write(json.dumps(message).encode() + b"\n")
    proto.flush()


def _warm_up(pipelines: Sequence[dict[str, Any]], device: str) -> None:
    """Import each pipeline and let it load its model before the first job (``warmup(options, device)``).

    A pipeline function may define ``warmup``; a failure is only logged (the job that
    needs the pipeline fails with the full reason).
    """
    from dicom_node.pipelines import resolve_pipeline

    for p in pipelines:
        try:
            fn = resolve_pipeline(str(p["function"]))
            warmup = getattr(fn, "warmup", None)
            if callable(warmup):
                warmup(dict(p.get("options") or {}), device)
        except Exception as exc:
            log.warning("worker: warming up %s failed: %s", p.get("function"), exc)


def serve(pipelines: Sequence[dict[str, Any]] = (), device: str = "auto") -> int:
    """Answer job specs on stdin until it ends (the warm worker's loop).

    Parameters
    ----------
    pipelines : sequence of dict
        ``{"function", "options"}`` of the configured pipelines: imported, and warmed up
        where they can be, before the first job, so that the first study does not pay it.
    device : str
        The device the jobs will name (for the warm-up).

    Returns
    -------
    int
        0 when stdin ends.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when its workers stop
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # print() and libraries' stdout: the log, never the answers
    saved = os.dup(2)
    _die_with_parent()
    _answer(proto, {"started": True, "pid": os.getpid()})
    t0 = time.perf_counter()
    _warm_up(pipelines, device)
    log.info("worker pid %d warmed up in %.1f s (%d pipeline(s))", os.getpid(), time.perf_counter() - t0,
             len(pipelines))
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            return 0
        spec = json.loads(line)
        ok = False
        with _output_to(Path(spec["out_dir"]) / "worker.log", saved):
            try:
                _write_result(spec, run_spec(spec))
                ok = True
            except Exception:
                log.exception("job %s: the pipelines failed", spec.get("job_id"))
        _answer(proto, {"job_id": spec.get("job_id"), "ok": ok, "loads": drain_model_loads(),
                        "rss_mb": memory_mb(os.getpid(), "VmRSS"), "peak_rss_mb": memory_mb(os.getpid(), "VmHWM")})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``--serve`` for the warm worker, else one spec from stdin.

    Parameters
    ----------
    argv : sequence of str, optional
        ``--serve``, ``--pipelines JSON`` (a list of ``{"function", "options"}``) and ``--device``.

    Returns
    -------
    int
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m dicom_node.workers.child")
    parser.add_argument("--serve", action="store_true", help="answer job specs, one JSON line each, until stdin ends")
    parser.add_argument("--pipelines", default="[]", help="JSON list of {function, options} to warm up at start")
    parser.add_argument("--device", default="auto", help="the device the jobs name")
    parser.add_argument("--model-cache-mb", type=float, default=0.0,
                        help="memory the warm models may hold, MiB (0: no limit)")
    args = parser.parse_args(argv)
    # worker.log: the same safe formatting as the node's log (UIDs hashed, controls escaped,
    # tracebacks and warnings through logging); highdicom's INFO lines are not kept.
    configure_logging("INFO")
    # The files a job reads were accepted by the receive path already; pydicom's per-value
    # validation on read only warns, and costs about 0.1 s of a 136-instance study (issue 16).
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    if args.model_cache_mb:
        from models.registry import set_cache_limit_mb

        set_cache_limit_mb(args.model_cache_mb)
    if args.serve:
        return serve(json.loads(args.pipelines), args.device)
    spec = json.loads(sys.stdin.read())
    _write_result(spec, run_spec(spec))
    return 0


if __name__ == "__main__":  # pragma: no cover - the child process
    sys.exit(main())
