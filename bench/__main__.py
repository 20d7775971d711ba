"""``python -m bench [--quick] [NAME ...]``: run every ``bench/*.py`` module that has a ``main()``.

Each module's ``main(argv)`` prints its own table; this runner passes ``--quick`` on,
runs the modules in name order (or only the ones named), and exits non-zero if any
module failed (the others still run).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

__all__ = ["discover", "main"]


def discover() -> list[str]:
    """Names of the bench modules that define ``main``, in name order."""
    names = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if callable(getattr(module, "main", None)):
            names.append(info.name)
    return sorted(names)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks.

    Parameters
    ----------
    argv : sequence of str, optional
        ``[--quick] [NAME ...]``.

    Returns
    -------
    int
        0 when every module returned 0.
    """
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small runs (for a smoke test)")
    parser.add_argument("names", nargs="*", help="only these bench modules")
    args = parser.parse_args(argv)
    available = discover()
    unknown = [n for n in args.names if n not in available]
    if unknown:
        print(f"bench: no module named {', '.join(unknown)}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    failed = []
    for name in args.names or available:
        print(f"\n=== bench.{name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            rc = importlib.import_module(f"bench.{name}").main(["--quick"] if args.quick else [])
        except Exception:  # one broken benchmark must not hide the others' figures: report and go on
            traceback.print_exc()
            rc = 1
        print(f"(bench.{name}: {time.perf_counter() - t0:.1f} s, exit {rc})", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
