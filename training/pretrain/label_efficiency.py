"""Cross-protocol label-efficiency evidence: labels from one protocol family, unlabelled data from all.

``mrinode train evaluate --config training/configs/label-efficiency.toml [--report-only]``
(the CLI sends a config with a ``[label_efficiency]`` table here; bundle configs go to
:mod:`training.evaluate`). Also ``python -m training.pretrain.label_efficiency --config FILE``.

The design is a hospital's: unlabelled studies from every scanner, labels from one.

1. Plans and writes synthetic subjects (:mod:`training.pretrain.families`): an unlabelled
   pool from every protocol family, a labelled pool from **one** family, held-out test
   subjects of the other families (``other-protocol``) and of the labelled family
   (``same-protocol``), validation subjects (for choosing settings) and probe subjects. The
   seeds of the roles are disjoint, so no test subject reaches pretraining or fine-tuning.
2. Pretrains one encoder per objective on the unlabelled pool plus the labelled pool's
   images (``swin_ssl`` in BrainSegFounder's two stages: unlabelled pool first, then the
   labelled family's images).
3. For each number of labelled subjects (``[finetune] labelled``, in the order given) and
   each repeat, draws the labelled subset from the repeat's seed and fine-tunes every arm
   (``scratch`` and each objective; the same architecture, subset, crops, steps and seed),
   then scores Dice WT/TC/ET and HD95 on both test sets (one row per arm, count, repeat and
   test set, written as it completes).
4. After the first count, frozen-encoder probes (:mod:`training.pretrain.probes`):
   sequence classification and TR/TE/flip regression with a linear head, against the same
   network trained from scratch on the same labels.
5. Writes ``label-efficiency.md``, PNG plots with error bars and the raw rows
   (``label-efficiency-results.json``, ``probe-results.json``) under the report folder.

Every stage is cached under ``work_dir`` (subjects, encoders with their settings, rows keyed
by a digest of the settings), so a stopped run continues where it was and ``--report-only``
redraws the report from the rows so far. ``split = "validation"`` scores the validation
subjects instead (for choosing settings) and writes its rows and report under ``work_dir``.

Config tables: ``[label_efficiency]`` (``split``), ``[families]`` (``labelled``, ``define``),
``[data]`` (``work_dir``, ``subjects_dir`` (default ``<work_dir>/subjects``), ``sequences``, ``voxel_mm``, ``seed`` and the subject counts of
:func:`training.pretrain.families.plan_split`), ``[encoder]``/``[encoder2d]`` (registry
configs), ``[pretrain]`` (``objectives``, ``steps``, ``batch_size``, ``patch``, ``steps_2d``,
``batch_size_2d``, ``patch_2d``, ``lr``, ``threads``, ``options.<objective>``; an objective may be listed
again as ``<objective>+<variant>`` with its own ``options."<objective>+<variant>"``, see :func:`objective_of`),
``[finetune]`` (``labelled``, ``steps``, ``lr``, ``batch_size``, ``roi``, ``repeats``,
``sequence_dropout``, ``encoder_lr_scale``, ``norm``), ``[finetune2d]``,
``[probe]`` (see :mod:`training.pretrain.probes`), ``[report]`` (``dir``, ``notes``,
``command``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

__all__ = [
    "TESTS",
    "arm_order",
    "arm_settings",
    "baselines",
    "labelled_subset",
    "main",
    "objective_of",
    "run",
    "run_cell",
    "worker_cells",
]

log = logging.getLogger(__name__)

#: The two test sets: the labelled family's held-out subjects and every other family's.
TESTS: tuple[str, str] = ("same-protocol", "other-protocol")


def labelled_subset(pool: int, k: int, seed: int) -> list[int]:
    """Indices of the ``k`` labelled subjects of one repeat: the first ``k`` of a seeded shuffle.

    The same for every arm; nested over ``k`` within a repeat (the 2 subjects are among the 5).

    Parameters
    ----------
    pool : int
        Size of the labelled pool.
    k : int
        Labelled subjects wanted, ``1 <= k <= pool``.
    seed : int
        The repeat's seed.

    Returns
    -------
    list of int
        Indices into the pool.

    Raises
    ------
    ValueError
        If ``k`` is outside ``[1, pool]``.
    """
    import torch

    if not 1 <= k <= pool:
        raise ValueError(f"config key 'finetune.labelled': {k} labelled subjects asked, the pool holds {pool}.")
    order: list[int] = torch.randperm(pool, generator=torch.Generator().manual_seed(int(seed))).tolist()
    return order[:k]


def _fingerprint(obj: Any) -> str:
    """A short digest of a JSON-able settings object (cache keys of encoders and results)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def objective_of(arm: str) -> str:
    """The registered objective of an arm: ``prism+shift`` is ``prism`` with ``[pretrain.options."prism+shift"]``.

    A variant (the name after ``+``) lets one report hold an objective with two option sets side by side,
    each with its own encoder, digest and rows.

    Parameters
    ----------
    arm : str
        An objective's name, or ``<objective>+<variant>``.

    Returns
    -------
    str
        The objective's registered name.
    """
    return arm.split("+", 1)[0]


def _spatial_dims(objective: str) -> int:
    from training.pretrain.registry import objective_class

    return int(getattr(objective_class(objective_of(objective)), "spatial_dims", 3))


def _pretrain(objective: str, cfg: dict[str, Any], work: Path, target_dirs: list[str], pool_dirs: list[str]) -> Path:
    """Pretrain (or find) the encoder of ``objective`` on ``pool_dirs`` + ``target_dirs``."""
    from training.pretrain.config import parse_config
    from training.pretrain.run import train

    out = work / "encoders" / objective
    pre, data = cfg["pretrain"], cfg["data"]
    two_d = _spatial_dims(objective) == 2
    steps = int(pre.get("steps_2d", pre["steps"])) if two_d else int(pre["steps"])
    patch = [*pre.get("patch_2d", [48, 48]), 1] if two_d else pre.get("patch", [32, 32, 32])
    data_table = {
        "sources": target_dirs + pool_dirs,
        "sequences": data["sequences"],
        "voxel_mm": float(data["voxel_mm"]),
        "patch": patch,
        "batch_size": int(pre.get("batch_size_2d", 16)) if two_d else int(pre.get("batch_size", 2)),
    }
    raw: dict[str, Any] = {
        "objective": objective_of(objective),
        "seed": int(data.get("seed", 0)),
        "encoder": dict(cfg["encoder2d"] if two_d else cfg["encoder"]),
        "options": dict(pre.get("options", {}).get(objective, {})),
        "data": data_table,
        "optim": {"lr": float(pre.get("lr", 1e-3)), "warmup_steps": max(1, steps // 20), "max_steps": steps},
        "run": {"out_dir": str(out), "threads": int(pre.get("threads", 2)), "log_every": 10,
                "checkpoint_every": max(10, steps // 10)},
    }
    if objective_of(objective) == "swin_ssl":  # BrainSegFounder: general data first, then the target data
        raw["stages"] = [
            {"name": "general", "steps": steps // 2, "data": {"sources": pool_dirs}},
            {"name": "target", "steps": steps - steps // 2, "data": {"sources": target_dirs}},
        ]
    settings = {k: v for k, v in raw.items() if k != "run"}
    marker = out / "settings.json"
    if (out / "encoder" / "encoder.json").is_file() and marker.is_file():
        if _fingerprint(json.loads(marker.read_text())) != _fingerprint(settings):
            raise ValueError(
                f"the {objective} encoder in {out} was pretrained with other settings than the config's; "
                "use another [data] work_dir or remove that folder."
            )
        return out / "encoder"
    result = train(parse_config(raw, f"label-efficiency pretrain {objective}"), resume=(out / "checkpoint.pt").is_file())
    marker.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
    return Path(result["encoder"])


def _arm_config(arm: str, enc: Path | None, cfg: dict[str, Any], n_seq: int) -> dict[str, Any]:
    """Segmenter config, crop, batch, steps and learning rates of one fine-tuning arm."""
    ft = cfg["finetune"]
    two_d = arm == "scratch2d" or (arm not in ("scratch",) and _spatial_dims(arm) == 2)
    if two_d:
        ft2 = {**ft, **cfg.get("finetune2d", {})}
        seg: dict[str, Any] = {
            "encoder": dict(cfg["encoder2d"], in_channels=n_seq),
            "num_classes": 4,
            # from scratch every weight must train; a pretrained encoder may stay frozen or get LoRA
            "slice": {"mode": str(ft2.get("mode", "full")) if enc is not None else "full",
                      "width": int(ft2.get("width", 64)), "lora_rank": int(ft2.get("lora_rank", 4))},
        }
        roi = [*[int(r) for r in ft2.get("roi", [48, 48])][:2], 1]
    else:
        ft2 = dict(ft)
        seg = {"encoder": dict(cfg["encoder"], in_channels=n_seq), "num_classes": 4, "norm": str(ft.get("norm", "instance"))}
        roi = [int(r) for r in ft.get("roi", [32, 32, 32])]
    if enc is not None:
        seg["encoder_checkpoint"] = str(enc)
    return {
        "seg": seg, "roi": roi, "steps": int(ft2["steps"]), "lr": float(ft2.get("lr", 1e-3)),
        "batch_size": int(ft2.get("batch_size", 2)), "sequence_dropout": float(ft2.get("sequence_dropout", 0.0)),
        "encoder_lr_scale": float(ft2.get("encoder_lr_scale", 1.0)),
    }


#: ``[pretrain]`` keys that no arm's rows depend on as a whole: each objective's own options go into its
#: digest only, and the 2D keys into the 2D arms' only (so one more objective adds rows, it keeps the rest).
_NOT_SHARED = ("objectives", "options", "threads", "steps_2d", "patch_2d", "batch_size_2d")


def arm_settings(cfg: dict[str, Any], split: str, arm: str, *, probe: bool = False) -> str:
    """The digest of everything one arm's rows depend on (their cache key).

    Parameters
    ----------
    cfg : dict
        The evidence config.
    split : str
        ``test`` or ``validation``.
    arm : str
        ``scratch``, ``scratch2d`` or an objective.
    probe : bool
        The key of the arm's probe rows (the ``[probe]`` table counts too).

    Returns
    -------
    str
        A short digest. The repeat count and the labelled counts are left out (rows carry
        both: more adds rows), as are other objectives and the worker threads.
    """
    pre, ft = cfg.get("pretrain", {}), cfg.get("finetune", {})
    two_d = arm == "scratch2d" or (arm != "scratch" and _spatial_dims(arm) == 2)
    keyed: dict[str, Any] = {k: cfg.get(k) for k in ("data", "encoder", "families")}
    keyed |= {"split": split, "pretrain": {k: v for k, v in pre.items() if k not in _NOT_SHARED},
              "finetune": {k: v for k, v in ft.items() if k not in ("repeats", "labelled")}}
    if two_d:
        keyed |= {"encoder2d": cfg.get("encoder2d"), "finetune2d": cfg.get("finetune2d"),
                  "pretrain2d": {k: pre.get(k) for k in ("steps_2d", "patch_2d", "batch_size_2d")}}
    if arm not in ("scratch", "scratch2d"):
        keyed["options"] = pre.get("options", {}).get(arm, {})
    if probe:
        keyed["probe"] = cfg.get("probe")
    return _fingerprint(keyed)


def baselines(objectives: list[str]) -> dict[str, str]:
    """The from-scratch arm each objective is compared with: the same architecture untrained.

    Parameters
    ----------
    objectives : list of str
        Pretraining objectives.

    Returns
    -------
    dict
        Objective -> ``"scratch"`` (3D Swin segmenter) or ``"scratch2d"`` (2D slice segmenter).
    """
    return {o: "scratch2d" if _spatial_dims(o) == 2 else "scratch" for o in objectives}


def arm_order(objectives: list[str]) -> list[str]:
    """The arms in one fixed order: the from-scratch baselines, then the objectives as configured.

    Every worker must see the same order, since cells are dealt out by position
    (:func:`worker_cells`).

    Parameters
    ----------
    objectives : list of str
        The config's objectives.

    Returns
    -------
    list of str
        Arm names.
    """
    base = set(baselines(objectives).values())
    return [b for b in ("scratch", "scratch2d") if b in base] + list(objectives)


def worker_cells(arms: list[str], counts: list[int], repeats: int, worker: tuple[int, int]) -> list[tuple[int, int, str]]:
    """The ``(labelled, repeat, arm)`` cells of worker ``(i, n)``: every ``n``-th in run order from ``i``.

    Parameters
    ----------
    arms : list of str
        From :func:`arm_order`.
    counts : list of int
        Labelled-subject counts, in run order.
    repeats : int
        Repeats per count.
    worker : tuple of int
        ``(i, n)``.

    Returns
    -------
    list of tuple
        This worker's cells, in run order.
    """
    me, n = worker
    every = [(k, r, a) for k in counts for r in range(repeats) for a in arms]
    return every[me::n]


def run_cell(arm: str, enc: Path | None, cfg: dict[str, Any], train_items: list[dict[str, Any]],
             tests: dict[str, list[dict[str, Any]]], *, labelled: int, repeat: int) -> list[dict[str, Any]]:
    """Fine-tune one arm on one repeat's labelled subset and score it on every test set.

    Parameters
    ----------
    arm : str
        ``scratch``, ``scratch2d`` or an objective's name.
    enc : Path or None
        The pretrained encoder (None from scratch).
    cfg : dict
        The evidence config.
    train_items : list of dict
        The labelled pool (:func:`training.pretrain.downstream.load_items`).
    tests : dict
        Test set name -> items.
    labelled : int
        Labelled subjects.
    repeat : int
        Repeat index; the subset and every random draw of the fine-tuning follow
        ``[data] seed + repeat``.

    Returns
    -------
    list of dict
        One row per test set.
    """
    from training.pretrain.downstream import evaluate_segmenter, finetune_segmenter

    seq = list(cfg["data"]["sequences"])
    vox = float(cfg["data"]["voxel_mm"])
    seed = int(cfg["data"].get("seed", 0)) + repeat
    chosen = [train_items[i] for i in labelled_subset(len(train_items), labelled, seed)]
    spec = _arm_config(arm, enc, cfg, len(seq))
    net, info = finetune_segmenter(
        spec["seg"], chosen, seq, spacing_mm=vox, roi=spec["roi"], steps=spec["steps"], lr=spec["lr"],
        batch_size=spec["batch_size"], sequence_dropout=spec["sequence_dropout"], seed=seed,
        encoder_lr_scale=spec["encoder_lr_scale"],
    )
    rows = []
    for test, items in tests.items():
        m = evaluate_segmenter(net, items, seq, spacing_mm=vox, roi=spec["roi"])
        rows.append({
            "arm": arm, "labelled": labelled, "test": test, "repeat": repeat, "seed": seed,
            "dice_wt": m["dice_WT"], "dice_tc": m["dice_TC"], "dice_et": m["dice_ET"],
            "hd95_wt": m["hd95_WT"], "hd95_tc": m["hd95_TC"], "hd95_et": m["hd95_ET"],
            "test_subjects": int(m["subjects"]), "train_ids": [it["id"] for it in chosen],
            "finetune_seconds": round(float(info["seconds"]), 1), "final_loss": float(info["losses"][-1]),
        })
    return rows


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"label-efficiency config {path} does not exist.")
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"label-efficiency config {path} is not valid TOML ({exc}).") from exc
    split = str(cfg.get("label_efficiency", {}).get("split", "test"))
    if split not in ("test", "validation"):
        raise ValueError(f"label-efficiency config {path}: [label_efficiency] split must be 'test' or 'validation', not {split!r}.")
    labelled = cfg["finetune"].get("labelled")
    if not isinstance(labelled, list) or not labelled or not all(isinstance(k, int) and k >= 1 for k in labelled):
        raise ValueError(f"label-efficiency config {path}: config key 'finetune.labelled' must be a list of "
                         "labelled-subject counts (integers >= 1), e.g. [5, 2, 20].")
    if int(cfg["finetune"].get("repeats", 1)) < 1:
        raise ValueError(f"label-efficiency config {path}: config key 'finetune.repeats' must be >= 1.")
    return cfg


def _write_roles(cfg: dict[str, Any], work: Path, roles: list[str], sequences: list[str] | None = None) -> dict[str, list[str]]:
    """Write (or find) the subjects of ``roles``; role -> subject folders."""
    from training.pretrain.families import parse_families, plan_split, write_family_subjects

    families, labelled = parse_families(cfg.get("families"))
    plan = plan_split(cfg["data"], families, labelled)
    seq = list(sequences or cfg["data"]["sequences"])
    vox = float(cfg["data"]["voxel_mm"])
    root = Path(cfg["data"].get("subjects_dir", work / "subjects"))
    return {r: write_family_subjects(root / r, plan[r], families, vox, seq) if plan[r] else []
            for r in roles}


def _append_rows(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append ``rows`` to the JSON list at ``path`` under a file lock (workers share it); return the list."""
    import fcntl
    import os

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current: list[dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else []
        current.extend(rows)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, indent=1) + "\n")
        os.replace(tmp, path)
        return current


def _wait(ready: Any, what: str, poll_s: float = 5.0) -> None:
    """Block until ``ready()`` is true (another worker is making ``what``)."""
    while not ready():
        log.info("waiting for %s (another worker makes it)", what)
        time.sleep(poll_s)


def run(config_path: str | Path, *, report_only: bool = False, worker: tuple[int, int] = (0, 1)) -> Path:
    """Run (or continue) the evidence and write the report.

    Parameters
    ----------
    config_path : str or Path
        The TOML config.
    report_only : bool
        Only redraw the report from the rows so far.
    worker : tuple of int
        ``(i, n)``: this process is worker ``i`` of ``n`` sharing the work folder (one CPU core
        each). Worker 0 writes the subjects and runs the probes; objective ``j`` is pretrained by
        worker ``j % n`` and cell ``j`` (in the order labelled count, repeat, arm) fine-tuned by
        worker ``j % n``; rows go to the shared results file under a lock.

    Returns
    -------
    Path
        The markdown report.

    Raises
    ------
    ValueError
        If the config is missing or invalid (the message names the file or key).
    """
    import torch

    from training.pretrain.downstream import load_items
    from training.pretrain.families import parse_families
    from training.pretrain.report import write_report

    path = Path(config_path)
    cfg = _read_config(path)
    me, workers = worker
    if not 0 <= me < workers:
        raise ValueError(f"--worker {me}/{workers}: the worker index must lie in [0, {workers}).")
    data, ft = cfg["data"], cfg["finetune"]
    split = str(cfg.get("label_efficiency", {}).get("split", "test"))
    _, labelled_family = parse_families(cfg.get("families"))
    work = Path(data["work_dir"])
    objectives = [str(o) for o in cfg["pretrain"]["objectives"]]
    base_of = baselines(objectives)
    if any(_spatial_dims(o) == 2 for o in objectives) and "encoder2d" not in cfg:
        raise ValueError(f"label-efficiency config {path}: a 2D objective needs an [encoder2d] table.")
    if split == "test":
        report_dir = Path(cfg.get("report", {}).get("dir", "docs/pretraining"))
        results_path, probes_path = work / "results.json", work / "probe-results.json"
    else:
        report_dir = work / "validation-report"
        results_path, probes_path = work / "results-validation.json", work / "probe-results-validation.json"
    arms = arm_order(objectives)
    digests = {arm: arm_settings(cfg, split, arm) for arm in arms}
    probe_digests = {arm: arm_settings(cfg, split, arm, probe=True) for arm in arms}
    settings = _fingerprint({k: cfg.get(k) for k in ("data", "families")} | {"split": split})  # the subjects'

    def mine(rows: list[dict[str, Any]], probes: bool = False) -> list[dict[str, Any]]:
        wanted = probe_digests if probes else digests
        return [r for r in rows if r.get("settings") == wanted.get(str(r.get("arm")))]

    results = mine(json.loads(results_path.read_text()) if results_path.is_file() else [])
    probe_rows = mine(json.loads(probes_path.read_text()) if probes_path.is_file() else [], probes=True)
    if report_only:
        return write_report(results, probe_rows, cfg, report_dir, work, base_of)
    torch.set_num_threads(int(cfg["pretrain"].get("threads", 2)))
    seq = list(data["sequences"])
    roles = ["labelled", "unlabelled", "test-same", "test-other", "validation"]
    ready = work / "subjects-ready"  # worker 0 writes the subjects; the others wait for this marker
    if me != 0:
        _wait(lambda: ready.is_file() and ready.read_text().strip() == settings, "the subjects")
    dirs = _write_roles(cfg, work, roles)
    if me == 0 and cfg.get("probe"):  # the probe subjects too, before the long part
        from training.pretrain.probes import PROBE_SEQUENCES

        _write_roles(cfg, work, ["probe-train", "probe-test"], PROBE_SEQUENCES)
    work.mkdir(parents=True, exist_ok=True)
    ready.write_text(settings + "\n")
    train_items = load_items(dirs["labelled"], seq)
    if split == "test":
        tests = {"same-protocol": load_items(dirs["test-same"], seq), "other-protocol": load_items(dirs["test-other"], seq)}
    else:
        if not dirs["validation"]:
            raise ValueError(f"label-efficiency config {path}: split 'validation' needs [data] val_subjects >= 1.")
        val = [(d, json.loads((Path(d) / "params.json").read_text()).get("protocol_family")) for d in dirs["validation"]]
        tests = {"same-protocol": load_items([d for d, f in val if f == labelled_family], seq),
                 "other-protocol": load_items([d for d, f in val if f != labelled_family], seq)}

    encoders: dict[str, Path | None] = {}
    for j, objective in enumerate(objectives):
        encoders.setdefault(base_of[objective], None)
        if j % workers != me:
            continue
        started = time.perf_counter()
        encoders[objective] = _pretrain(objective, cfg, work, dirs["labelled"], dirs["unlabelled"])
        log.info("pretrained %s in %.0f s", objective, time.perf_counter() - started)
    for objective in objectives:
        if objective not in encoders:
            folder = work / "encoders" / objective
            _wait(lambda f=folder: (f / "settings.json").is_file(), f"the {objective} encoder")  # type: ignore[misc]
            encoders[objective] = _pretrain(objective, cfg, work, dirs["labelled"], dirs["unlabelled"])
    encoders = {arm: encoders[arm] for arm in arm_order(objectives)}

    counts = [int(x) for x in ft["labelled"]]
    mine_cells = set(worker_cells(list(encoders), counts, int(ft.get("repeats", 1)), worker))
    for index, k in enumerate(counts):
        for repeat in range(int(ft.get("repeats", 1))):
            for arm, enc in encoders.items():
                if (k, repeat, arm) not in mine_cells or any(
                        r["arm"] == arm and r["labelled"] == k and r["repeat"] == repeat for r in results):
                    continue
                rows = [r | {"split": split, "labelled_family": labelled_family, "settings": digests[arm]}
                        for r in run_cell(arm, enc, cfg, train_items, tests, labelled=k, repeat=repeat)]
                results = mine(_append_rows(results_path, rows))
                write_report(results, probe_rows, cfg, report_dir, work, base_of)
                log.info("label efficiency %s, %d labelled, repeat %d: Dice WT %s", arm, k, repeat,
                         ", ".join(f"{r['test']} {r['dice_wt']:.3f}" for r in rows))
        unprobed = {a: e for a, e in encoders.items() if not any(r["arm"] == a for r in probe_rows)}
        if index == 0 and me == 0 and cfg.get("probe") and _three_d(unprobed):
            made = _probes(cfg, work, unprobed, split, probe_digests)
            probe_rows = mine(_append_rows(probes_path, made), probes=True)
            write_report(results, probe_rows, cfg, report_dir, work, base_of)
    results = mine(json.loads(results_path.read_text()))
    return write_report(results, probe_rows, cfg, report_dir, work, base_of)


def _three_d(encoders: dict[str, Path | None]) -> dict[str, Path | None]:
    """The 3D arms of ``encoders`` (the probes take 3D encoders only)."""
    return {arm: enc for arm, enc in encoders.items() if arm != "scratch2d" and (arm == "scratch" or _spatial_dims(arm) == 3)}


def _probes(cfg: dict[str, Any], work: Path, encoders: dict[str, Path | None], split: str,
            digests: dict[str, str]) -> list[dict[str, Any]]:
    """Frozen-encoder probes of the 3D arms of ``encoders`` (the from-scratch network with ``scratch``), as rows."""
    from training.pretrain.probes import PROBE_SEQUENCES, run_probes

    dirs = _write_roles(cfg, work, ["probe-train", "probe-test"], PROBE_SEQUENCES)
    rows = run_probes(cfg, _three_d(encoders), dirs["probe-train"], dirs["probe-test"])
    return [r | {"split": split, "settings": digests[r["arm"]]} for r in rows]


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Entry point of ``mrinode train evaluate`` for a label-efficiency config; returns an exit code.

    Parameters
    ----------
    args : argparse.Namespace or list of str, optional
        The CLI's namespace (``config``, ``report_only``) or an argument list
        (``--config FILE [--report-only]``).
    """
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(description="Label-efficiency evidence for the pretraining objectives.")
        parser.add_argument("--config", required=True, help="label-efficiency TOML config")
        parser.add_argument("--report-only", action="store_true", help="redraw the report from the results so far")
        parser.add_argument("--worker", default="0/1",
                            help="I/N: this process is worker I of N sharing the work folder (one core each)")
        args = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        i, _, n = str(getattr(args, "worker", "0/1")).partition("/")
        try:
            worker = (int(i), int(n))
        except ValueError:
            raise ValueError(f"--worker {args.worker!r}: write I/N, e.g. 0/2.") from None
        report = run(args.config, report_only=bool(getattr(args, "report_only", False)), worker=worker)
    except KeyError as exc:
        print(f"label efficiency: the config {args.config} lacks the key {exc}.", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"label efficiency: {exc}", file=sys.stderr)
        return 2
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
