"""Markdown report, PNG plots and paired statistics of the cross-protocol label-efficiency evidence."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["collapsed_cells", "paired_difference", "summarise", "write_report"]

_REGIONS = ("wt", "tc", "et")
_TESTS = ("other-protocol", "same-protocol")


def summarise(results: list[dict[str, Any]]) -> dict[tuple[str, int, str], dict[str, float]]:
    """Mean and sample standard deviation of every metric per ``(arm, labelled, test)`` over repeats.

    Parameters
    ----------
    results : list of dict
        Rows written by the evidence run.

    Returns
    -------
    dict
        ``(arm, labelled, test)`` -> ``{"dice_wt": mean, "dice_wt_sd": sd, ..., "repeats": n}``
        (sd is NaN with one repeat).
    """
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in results:
        groups.setdefault((str(row["arm"]), int(row["labelled"]), str(row["test"])), []).append(row)
    out = {}
    for key, rows in groups.items():
        summary: dict[str, float] = {"repeats": float(len(rows))}
        for region in _REGIONS:
            for metric in (f"dice_{region}", f"hd95_{region}"):
                vals = np.array([float(r.get(metric, math.nan)) for r in rows])
                finite = vals[np.isfinite(vals)]
                summary[metric] = float(finite.mean()) if finite.size else math.nan
                summary[f"{metric}_sd"] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
        out[key] = summary
    return out


def paired_difference(results: list[dict[str, Any]], arm: str, base: str, labelled: int, test: str,
                      metric: str = "dice_wt") -> dict[str, float]:
    """Paired difference ``arm - base`` over the repeats both have, with a 95 % t-interval.

    Parameters
    ----------
    results : list of dict
        Rows.
    arm, base : str
        The arm and the arm it is compared with (same subsets, crops, steps and seeds per repeat).
    labelled : int
        Labelled subjects.
    test : str
        Test set.
    metric : str
        Row key.

    Returns
    -------
    dict
        ``mean``, ``sd``, ``low``, ``high`` (NaN with fewer than 2 pairs) and ``n``.
    """
    from scipy import stats

    def by_repeat(name: str) -> dict[int, float]:
        return {int(r["repeat"]): float(r[metric]) for r in results
                if r["arm"] == name and int(r["labelled"]) == labelled and r["test"] == test}

    a, b = by_repeat(arm), by_repeat(base)
    d = np.array([a[k] - b[k] for k in sorted(set(a) & set(b))])
    n = int(d.size)
    if n == 0:
        return {"mean": math.nan, "sd": math.nan, "low": math.nan, "high": math.nan, "n": 0.0}
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "sd": math.nan, "low": math.nan, "high": math.nan, "n": 1.0}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "n": float(n)}


def collapsed_cells(results: list[dict[str, Any]], floor: float = 0.05) -> list[tuple[str, int, str, str]]:
    """Cells where *every* arm's mean Dice of a region is below ``floor`` on a test set.

    Such a cell is a defect of the run (a region that no network learned: a loss that
    suppresses small regions, too few steps), not a comparison of initialisations; the report
    lists them above the tables.

    Parameters
    ----------
    results : list of dict
        Rows.
    floor : float
        Dice below which a region counts as not learned.

    Returns
    -------
    list of tuple
        ``(region, labelled, test, arms)`` per collapsed cell.
    """
    summary = summarise(results)
    cells: dict[tuple[int, str], list[str]] = {}
    for arm, k, test in summary:
        cells.setdefault((k, test), []).append(arm)
    out = []
    for (k, test), arms in sorted(cells.items()):
        for region in _REGIONS:
            means = [summary[(a, k, test)][f"dice_{region}"] for a in arms]
            if means and all(math.isfinite(m) and m < floor for m in means):
                out.append((region.upper(), k, test, ", ".join(sorted(arms))))
    return out


def _plot(summary: dict[tuple[str, int, str], dict[str, float]], arms: list[str], counts: list[int], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8), sharex=True)
    for row, test in enumerate(_TESTS):
        for col, region in enumerate(_REGIONS):
            ax = axes[row][col]
            metric = f"dice_{region}"
            for i, arm in enumerate(arms):
                ks = [k for k in counts if (arm, k, test) in summary]
                ys = [summary[(arm, k, test)][metric] for k in ks]
                es = [np.nan_to_num(summary[(arm, k, test)][f"{metric}_sd"]) for k in ks]
                xs = [k * (1 + 0.03 * (i - len(arms) / 2)) for k in ks]  # small offsets: error bars stay readable
                if ks:
                    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=arm,
                                linestyle="--" if arm.startswith("scratch") else "-")
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(counts, [str(k) for k in counts])
            ax.set_title(f"Dice {region.upper()}, {test} test")
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("labelled subjects (one protocol family)")
        axes[row][0].set_ylabel("Dice (mean ± SD over repeats)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _plot_paired(results: list[dict[str, Any]], pairs: list[tuple[str, str]], counts: list[int], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, test in zip(axes, _TESTS, strict=True):
        for i, (arm, base) in enumerate(pairs):
            xs, ys, lo, hi = [], [], [], []
            for k in counts:
                d = paired_difference(results, arm, base, k, test)
                if d["n"] >= 1:
                    xs.append(k * (1 + 0.04 * (i - len(pairs) / 2)))
                    ys.append(100 * d["mean"])
                    lo.append(100 * (d["mean"] - d["low"]) if math.isfinite(d["low"]) else 0.0)
                    hi.append(100 * (d["high"] - d["mean"]) if math.isfinite(d["high"]) else 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=f"{arm} − {base}")
        ax.axhline(0, color="k", lw=0.8)
        ax.axhline(5, color="g", lw=0.8, ls=":", label="target +5")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(counts, [str(k) for k in counts])
        ax.set_xlabel("labelled subjects")
        ax.set_title(f"paired difference in Dice WT (points), {test} test")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Dice WT points (mean, 95 % t-interval)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _plot_probes(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({(r["arm"], r["mode"]) for r in rows}, key=lambda am: (am[1] != "scratch-trained", am[0] != "scratch", am))
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    for ax, (probe, key) in zip(axes, [("sequence", "accuracy"), ("tr", "r2"), ("te", "r2"), ("flip", "r2")], strict=True):
        width = 0.8 / max(1, len(labels))
        for i, (arm, mode) in enumerate(labels):
            ys = [next((float(r[key]) for r in rows if r["arm"] == arm and r["mode"] == mode and r["probe"] == probe
                        and r["test"] == t), math.nan) for t in _TESTS]
            ax.bar(np.arange(2) + i * width, ys, width, label=f"{arm} ({mode})")
        ax.set_xticks(np.arange(2) + 0.4 - width / 2, list(_TESTS))
        ax.set_title(f"{probe}: {'accuracy' if key == 'accuracy' else 'R²'}")
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.05)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _plot_losses(work: Path, objectives: list[str], out: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = False
    fig, ax = plt.subplots(figsize=(7, 4))
    for obj in objectives:
        hist = work / "encoders" / obj / "history.json"
        if not hist.is_file():
            continue
        loss = np.array([r["loss"] for r in json.loads(hist.read_text())])
        if loss.size == 0:
            continue
        k = max(1, loss.size // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(smooth.size) + k, smooth / max(1e-9, smooth[0]), label=obj)
        found = True
    ax.set_xlabel("pretraining step")
    ax.set_ylabel("loss / initial loss (moving mean)")
    ax.grid(alpha=0.3)
    if found:
        ax.legend()
        fig.tight_layout()
        fig.savefig(out, dpi=100)
    plt.close(fig)
    return found


def _fmt(v: float, sd: float = math.nan, digits: int = 3) -> str:
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}" + (f" ± {sd:.{digits}f}" if math.isfinite(sd) else "")


def _pts(d: dict[str, float]) -> str:
    if d["n"] < 1:
        return "n/a"
    ci = f" [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]" if math.isfinite(d["low"]) else " (1 repeat: no interval)"
    return f"{100 * d['mean']:+.1f}{ci}"


def _probe_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| encoder | head | test | sequence accuracy | TR R² | TE R² | flip R² | series (train / test) |",
             "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["arm"], r["mode"]) for r in rows}, key=lambda am: (am[1] != "scratch-trained", am[0] != "scratch", am))
    for arm, mode in keys:
        for test in _TESTS:
            got = {r["probe"]: r for r in rows if r["arm"] == arm and r["mode"] == mode and r["test"] == test}
            if not got:
                continue
            seq = got.get("sequence", {})
            lines.append(
                f"| {arm} | {mode} | {test} | {_fmt(float(seq.get('accuracy', math.nan)))} | "
                + " | ".join(_fmt(float(got.get(p, {}).get("r2", math.nan)), digits=2) for p in ("tr", "te", "flip"))
                + f" | {seq.get('n_train', '?')} / {seq.get('n_test', '?')} |"
            )
    return lines


def _probe_verdict(rows: list[dict[str, Any]], objectives: list[str]) -> list[str]:
    def acc(arm: str, mode: str, test: str) -> float:
        return next((float(r["accuracy"]) for r in rows if r["arm"] == arm and r["mode"] == mode
                     and r["test"] == test and r["probe"] == "sequence"), math.nan)

    scored = [(acc(o, "frozen-linear", "other-protocol"), o) for o in objectives if math.isfinite(acc(o, "frozen-linear", "other-protocol"))]
    if not scored:
        return ["No probe of a pretrained encoder has finished; no verdict."]
    best_acc, best = max(scored)
    scratch = acc("scratch", "scratch-trained", "other-protocol")
    same = acc(best, "frozen-linear", "same-protocol")
    met = best_acc >= 0.95 and (not math.isfinite(scratch) or best_acc > scratch)
    return [
        f"Best frozen encoder for sequence classification on the other protocol families: **{best}**, "
        f"{best_acc:.3f} (same family {same:.3f}); the same network trained from scratch on the same labelled series: "
        f"{_fmt(scratch)}. Target (≥ 0.95 and better than scratch): **{'met' if met else 'not met'}**."
    ]


def write_report(results: list[dict[str, Any]], probe_rows: list[dict[str, Any]], cfg: dict[str, Any], report_dir: Path,
                 work: Path, baselines: dict[str, str] | None = None) -> Path:
    """Write ``label-efficiency.md``, its plots and the raw rows under ``report_dir``.

    Parameters
    ----------
    results : list of dict
        Segmentation rows of the evidence run (possibly partial).
    probe_rows : list of dict
        Probe rows (possibly none yet).
    cfg : dict
        The evidence config.
    report_dir : Path
        Output folder (``docs/pretraining``).
    work : Path
        Work folder (pretraining histories).
    baselines : dict, optional
        Objective -> the from-scratch arm of the same architecture (default ``"scratch"``).

    Returns
    -------
    Path
        The markdown file.
    """
    from training.pretrain.families import parse_families

    report_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(results)
    objectives = list(cfg["pretrain"]["objectives"])
    base_of = {o: (baselines or {}).get(o, "scratch") for o in objectives}
    arms = [b for b in ("scratch", "scratch2d") if b in base_of.values()] + objectives
    public = [{k: v for k, v in r.items() if k != "settings"} for r in results]
    (report_dir / "label-efficiency-results.json").write_text(json.dumps(public, indent=1) + "\n")
    if probe_rows:
        (report_dir / "probe-results.json").write_text(
            json.dumps([{k: v for k, v in r.items() if k != "settings"} for r in probe_rows], indent=1) + "\n")
    counts = sorted({int(k) for k in cfg["finetune"]["labelled"]} | {int(r["labelled"]) for r in results})
    _plot(summary, arms, counts, report_dir / "label-efficiency.png")
    _plot_paired(results, [(o, base_of[o]) for o in objectives], counts, report_dir / "label-efficiency-paired.png")
    if probe_rows:
        _plot_probes(probe_rows, report_dir / "probes.png")
    has_losses = _plot_losses(work, objectives, report_dir / "pretraining-loss.png")
    d, ft, pre, enc = cfg["data"], cfg["finetune"], cfg["pretrain"], cfg["encoder"]
    families, labelled = parse_families(cfg.get("families"))
    split = str(cfg.get("label_efficiency", {}).get("split", "test"))
    command = cfg.get("report", {}).get("command", "mrinode train evaluate --config <this config>")
    n_other = len(families) - 1
    lines = [
        "# Cross-protocol label efficiency of the pretraining objectives",
        "",
        f"Made by `{command}` (`--report-only` redraws this page from the rows so far). "
        "Raw rows: `label-efficiency-results.json` (one per arm, labelled count, repeat and test set) and "
        "`probe-results.json`.",
        f"Scored on the **{split}** subjects."
        + (" The validation subjects are for choosing settings; the evidence is the test-split report." if split != "test" else ""),
        "All data are **synthetic** (the project's physics-based engine); the models are small CPU models. "
        "These figures say whether each objective helps on this data at this scale, nothing about real scans.",
        "",
        "## Design",
        "",
        "A hospital's situation: unlabelled studies from every scanner, labels from one.",
        "",
        "- Protocol families (vendor, field strength, T1 technique, SNR scale, motion): "
        + "; ".join(f"`{f.name}` ({f.vendor}, {f.field_strength:g} T, T1 {f.t1_kind}, SNR × {f.snr_scale:g}, "
                    f"motion ≤ {f.motion:g})" for f in families) + ".",
        f"- Unlabelled pool (pretraining only): {d.get('unlabelled_subjects', 0)} subjects of each family "
        f"(healthy and tumour) plus the labelled pool's images. Labelled pool: {d.get('labelled_subjects', 0)} "
        f"subjects of **`{labelled}`** only; each repeat draws its labelled subset from its seed (the same subset for "
        "every arm; the smaller subsets are nested in the larger).",
        f"- Test: `other-protocol` = {d.get('test_other_subjects', 0)} held-out subjects of each of the {n_other} other "
        f"families; `same-protocol` = {d.get('test_same_subjects', 0)} held-out subjects of `{labelled}`. Their seeds "
        "come from ranges that pretraining and fine-tuning never use (`training.pretrain.families.plan_split`; "
        "tested). Sequences " + ", ".join(d["sequences"]) + f"; {d['voxel_mm']} mm grid.",
        f"- Network: encoder `{json.dumps(enc, sort_keys=True)}` with the SwinUNETR-style decoder (`models.segmenter`), "
        "the same in every 3D arm; `scratch` is it from random weights.",
        f"- Pretraining: {pre['steps']} steps, batch {pre.get('batch_size', 2)}, crops {pre.get('patch', [32, 32, 32])}, "
        f"lr {pre.get('lr', 1e-3)} (`swin_ssl`: unlabelled pool, then the labelled family's images).",
        f"- Fine-tuning: {ft['steps']} steps for every arm and count, batch {ft.get('batch_size', 2)} crops "
        f"{ft.get('roi', [32, 32, 32])}, lr {ft.get('lr', 1e-3)} (AdamW, cosine to 5 %), Dice + CE; a "
        f"pretrained encoder trains at {ft.get('encoder_lr_scale', 1.0)} × lr. Repeats: {ft.get('repeats', 1)} "
        "(repeat r: subset and every random draw from seed + r, identical across arms).",
        "- Statistics: mean ± SD (sample) over repeats; the paired difference of an objective and scratch is taken "
        "repeat by repeat (same subset, crops and seed) with a 95 % t-interval (n − 1 degrees of freedom).",
    ]
    if "scratch2d" in base_of.values():  # the 2D arms have their own network and baseline
        ft2 = {**ft, **cfg.get("finetune2d", {})}
        lines.insert(-1,
            f"- 2D arms ({', '.join(f'`{o}`' for o, b in base_of.items() if b == 'scratch2d')}): slice encoder "
            f"`{json.dumps(cfg.get('encoder2d', {}), sort_keys=True)}` pretrained {pre.get('steps_2d', pre['steps'])} "
            f"steps on {pre.get('patch_2d', [48, 48])} slices, batch {pre.get('batch_size_2d', 16)}, with a slice "
            f"decoder (`training.pretrain.slices`, width {ft2.get('width', 64)}, mode {ft2.get('mode', 'full')}) "
            f"fine-tuned on {ft2.get('roi', [48, 48])} slices, batch {ft2.get('batch_size', 2)}, encoder at "
            f"{ft2.get('encoder_lr_scale', 1.0)} × lr; compared with `scratch2d`, the same 2D network from random weights.")
    lines.append("")
    collapsed = collapsed_cells(results)
    if collapsed:
        lines += ["**Check before reading:** in these cells no arm learned a region (mean Dice < 0.05 for every arm), "
                  "so they compare nothing: " + "; ".join(f"{r} at {k} labelled, {t} ({a})" for r, k, t, a in collapsed) + ".", ""]
    lines += ["## Gain over scratch: paired difference in Dice WT points, mean [95 % interval]", "",
              "| objective | test | " + " | ".join(f"{k} labelled" for k in counts) + " |",
              "|---|---|" + "---|" * len(counts)]
    for obj in objectives:
        for test in _TESTS:
            lines.append(f"| {obj} − {base_of[obj]} | {test} | "
                         + " | ".join(_pts(paired_difference(results, obj, base_of[obj], k, test)) for k in counts) + " |")
    lines += ["", "![paired differences](label-efficiency-paired.png)", "",
              "## Held-out Dice (mean ± SD over repeats)", "",
              "| arm | labelled | test | Dice WT | Dice TC | Dice ET | HD95 WT (mm) | repeats |",
              "|---|---|---|---|---|---|---|---|"]
    for k in counts:
        for test in _TESTS:
            for arm in arms:
                s = summary.get((arm, k, test))
                if s is None:
                    continue
                lines.append(
                    f"| {arm} | {k} | {test} | {_fmt(s['dice_wt'], s['dice_wt_sd'])} | {_fmt(s['dice_tc'], s['dice_tc_sd'])} | "
                    f"{_fmt(s['dice_et'], s['dice_et_sd'])} | {_fmt(s['hd95_wt'], s['hd95_wt_sd'], 1)} | {int(s['repeats'])} |"
                )
    lines += ["", "![Dice against labelled subjects](label-efficiency.png)", ""]
    if has_losses:
        lines += ["![Pretraining loss](pretraining-loss.png)", ""]
    focus = 5 if 5 in counts else counts[0] if counts else 5
    lines += [f"## Verdict ({focus} labelled subjects, other-protocol test)", ""]
    diffs = [(paired_difference(results, o, base_of[o], focus, "other-protocol"), o) for o in objectives]
    diffs = [(dd, o) for dd, o in diffs if dd["n"] >= 1]
    if not diffs:
        lines.append(f"No objective has a finished repeat at {focus} labelled subjects; no verdict.")
    else:
        dd, best = max(diffs, key=lambda x: x[0]["mean"])
        met = dd["mean"] >= 0.05 and math.isfinite(dd["low"]) and dd["low"] > 0
        lines.append(
            f"Best objective at {focus} labelled subjects on the other protocol families: **{best}**, "
            f"{_pts(dd)} Dice WT points over {base_of[best]} ({int(dd['n'])} paired repeats). "
            f"Target (≥ +5 points with the interval above 0): **{'met' if met else 'not met'}**. "
            + "Every objective: " + "; ".join(f"{o} {_pts(x)}" for x, o in diffs) + "."
        )
    lines += ["", "## Frozen-encoder probes", ""]
    if probe_rows:
        pc = cfg.get("probe", {})
        lines += [
            f"Series of {d.get('probe_train_subjects', 0)} `{labelled}` subjects label the probes (T1, T1C, T2, FLAIR, PD, "
            f"DWI, ADC, SWI; TR, TE, flip from the engine's protocols); test series come from {d.get('probe_test_subjects', 0)} "
            f"held-out subjects of every family. Each series is cropped to {pc.get('roi', [32, 32, 32])} around the head's "
            "centre and given to the encoder in every channel; features are every stage's global mean. "
            "`frozen-linear`: logistic / ridge regression on the frozen features (regularisation by cross-validation on "
            "the training series); `scratch` + `frozen-linear` is the untrained encoder; `scratch-trained`: the same "
            f"network trained end to end from scratch on the same series ({pc.get('steps', 300)} steps). "
            + ("`frozen-linear-alone`: the same linear heads with the series given alone in each channel in turn (the "
               "others zero, as a missing sequence is; features averaged over the channels) — declared before the run, "
               "shown beside `frozen-linear`, not used for the verdict. "
               if any(r["mode"] == "frozen-linear-alone" for r in probe_rows) else "")
            + "R² is on normalised log TR, log TE and flip angle.",
            "",
            *_probe_table(probe_rows),
            "",
            "![probes](probes.png)",
            "",
            *_probe_verdict(probe_rows, objectives),
        ]
    else:
        lines.append("The probes have not run yet.")
    notes = cfg.get("report", {}).get("notes")
    if notes:
        lines += ["", "## Notes", "", str(notes).strip()]
    out = report_dir / "label-efficiency.md"
    out.write_text("\n".join(lines) + "\n")
    return out
