"""The fine-tuning config: a TOML file read into a typed :class:`FinetuneConfig`.

Tables and keys (defaults in brackets)::

    name = "brain-tumour-demo"
    seed = 0
    [data]            manifest [""], dirs [[]], layout ["auto"], synth [{}]
                      (generate_subject keywords plus subjects, seed), val_subjects [2],
                      val_subsets [{all = channels, FLAIR = ["FLAIR"]}],
                      real_negatives [""] (a split of the real-scan corpus (training/realdata/corpus.json), e.g.
                      "train": real healthy heads added with every voxel background),
                      real_negative_repeats [1] (times each real head is listed)
    [network]         num_classes [4], norm ["instance"], full_resolution [true], encoder_checkpoint [""]
    [network.encoder] build_encoder config (in_channels defaults to len(channels))
    [preprocessing]   channels [T1, T1C, T2, FLAIR], spacing_mm [[2, 2, 2]], roi_size [[64, 64, 64]]
                      (training crops), inference_roi_size [roi_size] (sliding windows), overlap [0.25],
                      min_component_fraction [0.0] (engine drops foreground components smaller
                      than this fraction of the largest), normalize ["zscore_foreground"] (or
                      "zscore_per_channel": each channel over its own foreground),
                      mask_outside_head [false] (engine sets everything outside the head to background)
    [train]           max_steps [1000], batch_size [2], samples_per_subject [1], lr [1e-3],
                      weight_decay [1e-5], sequence_dropout [0.5], threads [1], log_every [10],
                      checkpoint_every [100], val_every [0], out_dir ["var/finetune/<name>"],
                      init_weights [""] (warm start of the whole network from a fine-tuning
                      checkpoint.pt or a bundle folder; optimiser and schedule start afresh),
                      pos_neg [[2, 1]] (crops centred on tumour : on tumour-free head tissue),
                      intensity_augment [false] (random blur, gamma and noise),
                      sequence_dropout_weights [{}] (relative weight of a kept subset when
                      sequence dropout draws one, keyed by channel names joined with "+", for
                      example {FLAIR = 4.0, "T2+FLAIR" = 2.0}; subsets not named weigh 1),
                      silent_subsets [[]] (subsets, named like sequence_dropout_weights' keys,
                      on which every crop's label is background: the model is taught to give no
                      tumour from, say, a T1 alone, where it cannot be seen),
                      domain_randomisation [false] (true, or a table with enabled = true and any
                      of training.datasets.DR_DEFAULTS' keys: remap_prob, gamma, remap_points,
                      remap_jitter, clip_prob, clip_percentile, quantise_prob, bias_prob,
                      bias_coeff, noise_prob, noise_std, thick_slices_prob, thick_factor,
                      zero_background_prob, fov_prob, fov_fraction: SynthSeg-style random
                      intensity curves, bias fields, noise, thick slices, zero backgrounds and
                      partial fields of view on scanner intensities before the z-score; needs
                      [preprocessing] normalize = "zscore_per_channel")
    [bundle]          out [""] (no export when empty), version ["0.1.0"], half [true],
                      description [""], command [""]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FinetuneConfig", "load_finetune_config", "parse_finetune_config"]

_KNOWN = {
    "": {"name", "seed", "data", "network", "preprocessing", "train", "bundle"},
    "data": {"manifest", "dirs", "layout", "synth", "val_subjects", "val_subsets", "real_negatives",
             "real_negative_repeats"},
    "network": {"num_classes", "norm", "full_resolution", "encoder_checkpoint", "encoder"},
    "preprocessing": {"channels", "spacing_mm", "roi_size", "inference_roi_size", "overlap", "min_component_fraction",
                      "normalize", "mask_outside_head"},
    "train": {"max_steps", "batch_size", "samples_per_subject", "lr", "weight_decay", "sequence_dropout",
              "threads", "log_every", "checkpoint_every", "val_every", "out_dir", "init_weights", "pos_neg",
              "intensity_augment", "sequence_dropout_weights", "domain_randomisation", "silent_subsets"},
    "bundle": {"out", "version", "half", "description", "command"},
}


@dataclass
class FinetuneConfig:
    """Typed fine-tuning settings (see the module docstring)."""

    name: str
    network: dict[str, Any]
    channels: list[str]
    seed: int = 0
    manifest: str = ""
    data_dirs: list[str] = field(default_factory=list)
    layout: str = "auto"
    synth: dict[str, Any] = field(default_factory=dict)
    val_subjects: int = 2
    val_subsets: dict[str, list[str]] = field(default_factory=dict)
    spacing_mm: list[float] = field(default_factory=lambda: [2.0, 2.0, 2.0])
    roi_size: list[int] = field(default_factory=lambda: [64, 64, 64])
    inference_roi_size: list[int] = field(default_factory=lambda: [64, 64, 64])
    min_component_fraction: float = 0.0
    normalize: str = "zscore_foreground"
    mask_outside_head: bool = False
    overlap: float = 0.25
    max_steps: int = 1000
    batch_size: int = 2
    samples_per_subject: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-5
    sequence_dropout: float = 0.5
    sequence_dropout_weights: dict[tuple[int, ...], float] = field(default_factory=dict)
    silent_subsets: list[tuple[int, ...]] = field(default_factory=list)
    init_weights: str = ""
    pos_neg: list[float] = field(default_factory=lambda: [2.0, 1.0])
    intensity_augment: bool = False
    domain_randomisation: dict[str, Any] | None = None
    real_negatives: str = ""
    real_negative_repeats: int = 1
    threads: int = 1
    log_every: int = 10
    checkpoint_every: int = 100
    val_every: int = 0
    out_dir: str = ""
    bundle_out: str = ""
    bundle_version: str = "0.1.0"
    bundle_half: bool = True
    description: str = ""
    command: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def _check_keys(raw: dict[str, Any], where: str) -> None:
    for table, known in _KNOWN.items():
        section = raw if not table else raw.get(table, {})
        if not isinstance(section, dict):
            raise ValueError(f"{where}: [{table}] must be a table.")
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} in [{table or 'top level'}]; "
                             f"known: {', '.join(sorted(known))}.")


def _dropout_weights(raw: Any, channels: list[str], where: str) -> dict[tuple[int, ...], float]:
    """Turn ``{"T2+FLAIR": 2.0}`` into ``{(2, 3): 2.0}`` (channel indices), checking every name and weight."""
    key = "[train] sequence_dropout_weights"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: {key} must be a table of subset = weight, for example {{FLAIR = 4.0}}.")
    out: dict[tuple[int, ...], float] = {}
    for subset, weight in raw.items():
        names = [n.strip() for n in str(subset).split("+")]
        unknown = [n for n in names if n not in channels]
        if unknown:
            raise ValueError(f"{where}: {key} names {', '.join(unknown)}, which is not among the channels "
                             f"({', '.join(channels)}).")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise ValueError(f"{where}: {key} {subset} = {weight!r} must be a number ≥ 0.")
        out[tuple(sorted({channels.index(n) for n in names}))] = float(weight)
    return out


def _silent_subsets(raw: Any, channels: list[str], where: str) -> list[tuple[int, ...]]:
    """``["T1", "T1+T1C"]`` → ``[(0,), (0, 1)]`` (channel indices), checking every name."""
    key = "[train] silent_subsets"
    if not isinstance(raw, list):
        raise ValueError(f"{where}: {key} must be a list of subsets, for example [\"T1\", \"T1C\"].")
    out = []
    for subset in raw:
        names = [n.strip() for n in str(subset).split("+")]
        unknown = [n for n in names if n not in channels]
        if unknown:
            raise ValueError(f"{where}: {key} names {', '.join(unknown)}, which is not among the channels "
                             f"({', '.join(channels)}).")
        out.append(tuple(sorted({channels.index(n) for n in names})))
    return out


def _domain_randomisation(raw: Any, normalize: str, where: str) -> dict[str, Any] | None:
    """``[train] domain_randomisation``: false / true / a table → None or the options (checked)."""
    key = "[train] domain_randomisation"
    if isinstance(raw, bool):
        opts: dict[str, Any] | None = {} if raw else None
    elif isinstance(raw, dict):
        opts = {k: v for k, v in raw.items() if k != "enabled"} if raw.get("enabled", True) else None
    else:
        raise ValueError(f"{where}: {key} must be true, false or a table of options (enabled = true, remap_prob = ...).")
    if opts is None:
        return None
    from training.datasets import DR_DEFAULTS

    unknown = sorted(set(opts) - set(DR_DEFAULTS))
    if unknown:
        raise ValueError(f"{where}: {key} has unknown key(s) {', '.join(unknown)}; known: enabled, "
                         f"{', '.join(sorted(DR_DEFAULTS))}.")
    if normalize != "zscore_per_channel":
        raise ValueError(f"{where}: {key} needs [preprocessing] normalize = \"zscore_per_channel\" (it re-normalises "
                         f"each channel of a randomised crop on its own); got {normalize!r}.")
    return opts


def parse_finetune_config(raw: dict[str, Any], where: str = "fine-tuning config") -> FinetuneConfig:
    """Turn a parsed TOML dict into a :class:`FinetuneConfig`.

    Raises
    ------
    ValueError
        On unknown keys or a missing ``[network.encoder]`` table.
    """
    _check_keys(raw, where)
    data, net, pre = raw.get("data", {}), dict(raw.get("network", {})), raw.get("preprocessing", {})
    tr, bun = raw.get("train", {}), raw.get("bundle", {})
    name = str(raw.get("name", "segmenter"))
    channels = [str(c) for c in pre.get("channels", ["T1", "T1C", "T2", "FLAIR"])]
    if "encoder" not in net:
        raise ValueError(f"{where}: [network.encoder] is missing (for example name = \"swin3d\").")
    from models.preprocess import NORMALIZATIONS

    if str(pre.get("normalize", "zscore_foreground")) not in NORMALIZATIONS:
        raise ValueError(f"{where}: [preprocessing] normalize {pre['normalize']!r} is not one of {', '.join(NORMALIZATIONS)}.")
    encoder = dict(net["encoder"])
    encoder.setdefault("in_channels", len(channels))
    network = {"encoder": encoder, "num_classes": int(net.get("num_classes", 4)), "norm": str(net.get("norm", "instance")),
               "full_resolution": bool(net.get("full_resolution", True))}
    if net.get("encoder_checkpoint"):
        network["encoder_checkpoint"] = str(net["encoder_checkpoint"])
    dropout_weights = _dropout_weights(tr.get("sequence_dropout_weights", {}), channels, where)
    dr = _domain_randomisation(tr.get("domain_randomisation", False), str(pre.get("normalize", "zscore_foreground")), where)
    subsets = data.get("val_subsets") or {"all": channels, "FLAIR": ["FLAIR"]}
    return FinetuneConfig(
        name=name,
        network=network,
        channels=channels,
        seed=int(raw.get("seed", 0)),
        manifest=str(data.get("manifest", "")),
        data_dirs=[str(d) for d in data.get("dirs", [])],
        layout=str(data.get("layout", "auto")),
        synth=dict(data.get("synth", {})),
        val_subjects=int(data.get("val_subjects", 2)),
        val_subsets={str(k): [str(x) for x in v] for k, v in subsets.items()},
        spacing_mm=[float(s) for s in pre.get("spacing_mm", [2.0, 2.0, 2.0])],
        roi_size=[int(s) for s in pre.get("roi_size", [64, 64, 64])],
        inference_roi_size=[int(s) for s in pre.get("inference_roi_size", pre.get("roi_size", [64, 64, 64]))],
        min_component_fraction=float(pre.get("min_component_fraction", 0.0)),
        normalize=str(pre.get("normalize", "zscore_foreground")),
        mask_outside_head=bool(pre.get("mask_outside_head", False)),
        overlap=float(pre.get("overlap", 0.25)),
        max_steps=int(tr.get("max_steps", 1000)),
        batch_size=int(tr.get("batch_size", 2)),
        samples_per_subject=int(tr.get("samples_per_subject", 1)),
        lr=float(tr.get("lr", 1e-3)),
        weight_decay=float(tr.get("weight_decay", 1e-5)),
        sequence_dropout=float(tr.get("sequence_dropout", 0.5)),
        sequence_dropout_weights=dropout_weights,
        silent_subsets=_silent_subsets(tr.get("silent_subsets", []), channels, where),
        threads=int(tr.get("threads", 1)),
        init_weights=str(tr.get("init_weights", "")),
        pos_neg=[float(v) for v in tr.get("pos_neg", [2.0, 1.0])],
        intensity_augment=bool(tr.get("intensity_augment", False)),
        domain_randomisation=dr,
        real_negatives=str(data.get("real_negatives", "")),
        real_negative_repeats=int(data.get("real_negative_repeats", 1)),
        log_every=int(tr.get("log_every", 10)),
        checkpoint_every=int(tr.get("checkpoint_every", 100)),
        val_every=int(tr.get("val_every", 0)),
        out_dir=str(tr.get("out_dir", f"var/finetune/{name}")),
        bundle_out=str(bun.get("out", "")),
        bundle_version=str(bun.get("version", "0.1.0")),
        bundle_half=bool(bun.get("half", True)),
        description=str(bun.get("description", "")),
        command=str(bun.get("command", "")),
        raw=raw,
    )


def load_finetune_config(path: str | Path) -> FinetuneConfig:
    """Read a fine-tuning TOML file.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not valid TOML or has unknown keys.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"fine-tuning config {p} does not exist.")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"fine-tuning config {p} is not valid TOML ({exc}).") from None
    return parse_finetune_config(raw, where=f"fine-tuning config {p}")
