"""Soak: N concurrent storescu senders for a bounded time, mrinode serve beside Orthanc.

Each of ``--senders`` threads (default 4) runs dcmtk ``storescu`` in a loop for ``--seconds``
(default 60): one short association per run carrying ``--instances`` small MR instances (64²,
its own series per sender, sent again and again). The receiver's open file descriptors,
threads and resident memory are read from ``/proc`` before the load, when it ends and
``--settle`` seconds (default 60) later. The same load then goes to Orthanc (the anchor,
``/usr/sbin/Orthanc`` on loopback, started by the bench) in the same run; the node settles
while Orthanc is loaded.

Targets (issue 15): 0 failed associations, descriptors and threads back to their start ± 5
after the settle time, resident memory within +20 % of its start. A failed association is a
``storescu`` run with a non-zero exit status (refused, aborted, timed out).

The whole run goes into a private network namespace (``tests/netns.sh``) when it can (root),
because Orthanc binds every interface. ``TCP_NODELAY=1`` is set for dcmtk and Orthanc.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Load", "Probe", "main", "probe"]

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TCP_NODELAY="1")
#: Targets: descriptors and threads back to start ± 5, RSS at most +20 % after settling.
FD_SLACK, THREAD_SLACK, RSS_GROWTH = 5, 5, 0.20


@dataclass(frozen=True)
class Probe:
    """One reading of a process's resources."""

    fds: int
    threads: int
    rss_mb: float


def probe(pid: int) -> Probe:
    """Open descriptors, threads and resident memory of a process (from ``/proc``).

    Parameters
    ----------
    pid : int
        The process.

    Returns
    -------
    Probe
        The reading.
    """
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads, rss = 0, 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024.0
    return Probe(fds, threads, rss)


@dataclass
class Load:
    """What the senders did against one receiver."""

    receiver: str
    seconds: float = 0.0
    ok: int = 0
    failed: int = 0
    instances: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    start: Probe | None = None
    end: Probe | None = None
    settled: Probe | None = None
    stored: int | None = None
    expected: int | None = None

    @property
    def rate(self) -> float:
        return self.instances / self.seconds if self.seconds else 0.0

    def verdict(self) -> str:
        """``met`` or the targets missed."""
        missed = []
        if self.failed:
            missed.append(f"{self.failed} failed")
        if self.start and self.settled:
            if abs(self.settled.fds - self.start.fds) > FD_SLACK:
                missed.append("fds")
            if abs(self.settled.threads - self.start.threads) > THREAD_SLACK:
                missed.append("threads")
            if self.settled.rss_mb > self.start.rss_mb * (1 + RSS_GROWTH):
                missed.append("RSS")
        if self.stored is not None and self.expected is not None and self.stored != self.expected:
            missed.append(f"stored {self.stored} of {self.expected}")
        return "met" if not missed else "missed: " + ", ".join(missed)


def _storescu() -> str:
    from dicom_node.dcmtk import find_tool

    return find_tool("storescu") or "storescu"


def _error_line(stderr: str) -> str:
    """The first error line of storescu's output, without numbers (to group them)."""
    for line in stderr.splitlines():
        if line.startswith(("E:", "F:")):
            return "".join(c for c in line if not c.isdigit()).strip()[:90]
    return stderr.strip().splitlines()[-1][:90] if stderr.strip() else "(no message)"


def run_load(receiver: str, port: int, aec: str, folders: list[Path], seconds: float) -> Load:
    """Run one storescu loop per folder against a receiver for ``seconds``.

    Parameters
    ----------
    receiver : str
        Its name in the table.
    port : int
        Its DICOM port on 127.0.0.1.
    aec : str
        Its AE title.
    folders : list of Path
        One folder of instances per sender.
    seconds : float
        How long the senders keep starting associations.

    Returns
    -------
    Load
        Associations done and failed, instances sent, error messages counted.
    """
    load = Load(receiver)
    lock = threading.Lock()
    tool = _storescu()
    deadline = time.monotonic() + seconds

    def sender(folder: Path) -> None:
        files = sorted(str(p) for p in folder.iterdir())
        timers = ["-to", "30", "-ta", "30", "-td", "30"]
        while time.monotonic() < deadline:
            r = subprocess.run([tool, *timers, "-aec", aec, "127.0.0.1", str(port), *files],
                               capture_output=True, text=True, env=ENV, check=False)
            with lock:
                if r.returncode == 0:
                    load.ok += 1
                    load.instances += len(files)
                else:
                    load.failed += 1
                    key = _error_line(r.stderr)
                    load.errors[key] = load.errors.get(key, 0) + 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=sender, args=(f,), daemon=True) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load.seconds = time.monotonic() - t0
    return load


def _echo(port: int, aec: str) -> None:
    from dicom_node.dcmtk import find_tool

    subprocess.run([find_tool("echoscu") or "echoscu", "-aec", aec, "127.0.0.1", str(port)],
                   capture_output=True, env=ENV, check=False, timeout=30)


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def _run(args: argparse.Namespace) -> list[Load]:
    from tests.support.mrfiles import write_mr_series
    from tests.support.node import NodeProcess
    from tests.support.orthanc import OrthancServer

    with tempfile.TemporaryDirectory(prefix="mrinode-soak-") as tmp:
        base = Path(tmp)
        folders = []
        for i in range(args.senders):
            write_mr_series(base / f"sender{i}", args.instances, size=64)
            folders.append(base / f"sender{i}")
        expected = args.senders * args.instances

        node = NodeProcess(base / "node", allowed_callers=[("STORESCU", "127.0.0.1"), ("ECHOSCU", "127.0.0.1")],
                           token=None)
        orthanc = OrthancServer(base / "orthanc")
        with node, orthanc:
            assert node.proc is not None and orthanc.proc is not None
            node_pid, orthanc_pid = node.proc.pid, orthanc.proc.pid
            _echo(node.dicom_port, "MRINODE")  # first association: lazy imports done before "start"
            _echo(orthanc.dicom_port, "ORTHANC")
            time.sleep(1.0)

            node_start = probe(node_pid)
            print(f"mrinode serve: {args.senders} senders for {args.seconds:.0f} s ...", flush=True)
            node_load = run_load("mrinode serve", node.dicom_port, "MRINODE", folders, args.seconds)
            node_load.start, node_load.end = node_start, probe(node_pid)
            node_settle_at = time.monotonic() + args.settle

            orthanc_start = probe(orthanc_pid)
            print(f"Orthanc: {args.senders} senders for {args.seconds:.0f} s ...", flush=True)
            orthanc_load = run_load("Orthanc (anchor)", orthanc.dicom_port, "ORTHANC", folders, args.seconds)
            orthanc_load.start, orthanc_load.end = orthanc_start, probe(orthanc_pid)
            orthanc_settle_at = time.monotonic() + args.settle

            print(f"settling {args.settle:.0f} s ...", flush=True)
            _sleep_until(node_settle_at)
            node_load.settled = probe(node_pid)
            _sleep_until(orthanc_settle_at)
            orthanc_load.settled = probe(orthanc_pid)

            node_load.stored, node_load.expected = len(list((node.data_dir / "spool").rglob("*.dcm"))), expected
            stats = orthanc.get("/statistics")
            orthanc_load.stored, orthanc_load.expected = int(stats.get("CountInstances", 0)), expected
    return [node_load, orthanc_load]


def _print(loads: list[Load], args: argparse.Namespace) -> None:
    print(f"\nSoak: {args.senders} concurrent storescu loops x {args.seconds:.0f} s, {args.instances} instances "
          f"(64², 8 kB) per association, TCP_NODELAY=1; resources of the receiver's process at start / end of "
          f"the load / {args.settle:.0f} s after")
    print(f"targets: 0 failed associations, fds and threads back to start ± {FD_SLACK}, "
          f"RSS ≤ start + {RSS_GROWTH:.0%}; load s: until the last storescu run ended (a stuck one waits for its "
          "30 s timers)")
    anchor = next(lo for lo in loads if lo.receiver.startswith("Orthanc"))
    head = (f"{'receiver':<18} {'load s':>6} {'assoc ok':>8} {'failed':>7} {'inst/s':>7} {'vs anchor':>9} "
            f"{'fds':>16} {'threads':>12} {'RSS MB':>17}  verdict")
    print(head)
    for lo in loads:
        assert lo.start and lo.end and lo.settled
        fds = f"{lo.start.fds}/{lo.end.fds}/{lo.settled.fds}"
        thr = f"{lo.start.threads}/{lo.end.threads}/{lo.settled.threads}"
        rss = f"{lo.start.rss_mb:.0f}/{lo.end.rss_mb:.0f}/{lo.settled.rss_mb:.0f}"
        ratio = lo.rate / anchor.rate if anchor.rate else 0.0
        print(f"{lo.receiver:<18} {lo.seconds:>6.0f} {lo.ok:>8} {lo.failed:>7} {lo.rate:>7.0f} {ratio:>8.2f}x "
              f"{fds:>16} {thr:>12} {rss:>17}  {lo.verdict()}")
    for lo in loads:
        for message, count in sorted(lo.errors.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  {lo.receiver}: {count} x {message}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak benchmark and print its table.

    Parameters
    ----------
    argv : sequence of str, optional
        ``[--seconds S] [--senders N] [--settle S] [--instances N] [--quick]``.

    Returns
    -------
    int
        0 when it ran (whatever the verdict), 1 when a tool is missing.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="load time per receiver (default 60)")
    parser.add_argument("--senders", type=int, default=4, help="concurrent storescu loops (default 4)")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after the load before the last reading")
    parser.add_argument("--instances", type=int, default=3, help="instances per association (default 3)")
    parser.add_argument("--quick", action="store_true", help="15 s of load, 10 s to settle")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.quick:
        args.seconds, args.settle = min(args.seconds, 15.0), min(args.settle, 10.0)
    for tool in ("storescu", "echoscu", "/usr/sbin/Orthanc"):
        if shutil.which(tool) is None:
            print(f"bench.soak: {tool} is not installed (run `make setup`).", file=sys.stderr)
            return 1
    if os.environ.get("MRINODE_IN_NETNS") != "1" and os.geteuid() == 0:
        passed = list(argv) if argv is not None else sys.argv[1:]
        cmd = [str(ROOT / "tests" / "netns.sh"), sys.executable, "-m", "bench.soak", *passed]
        return subprocess.run(cmd, cwd=ROOT, env=ENV, check=False).returncode
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    _print(_run(args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
