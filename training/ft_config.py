"""The fine-tuning config: a TOML file read into a typed :class:`FinetuneConfig`.

Each table is a typed model (:class:`FinetuneFile`): an unknown key or a bad value stops
the run with one sentence per problem, for example ``config key 'train.max_step':
unknown key (did you mean 'max_steps'?).``

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
                      mask_outside_head [false] (engine sets everything outside the head to background),
                      bias_correction_channels [[]] (sequences divided by their N4 field on the model
                      grid before training, as the engine does with the card's list: models.bias)
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
                      zero_background_prob, fov_prob, fov_fraction, gm_gain_prob, gm_gain:
                      SynthSeg-style random intensity curves, bias fields, noise, thick slices,
                      zero backgrounds, partial fields of view and grey-matter contrast (from
                      synthetic subjects' tissue maps) on scanner intensities before the z-score; needs
                      [preprocessing] normalize = "zscore_per_channel"),
                      hard_negatives [none] (a table: bundle (folder or name), fraction [0.5],
                      subsets [["all", "FLAIR", "T1C"]], shift_average [the bundle's card's]:
                      the bundle's false positives on each training subject, per input subset,
                      become fraction of the negative crop centres; shift_average = [0] mines
                      with one tiling; training.hard_negatives)
    [bundle]          out [""] (no export when empty), version ["0.1.0"], half [true],
                      description [""], command [""]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from dicom_node.typed_config import StrictModel, did_you_mean, error_sentences, load_toml

__all__ = ["FinetuneConfig", "FinetuneFile", "load_finetune_config", "parse_finetune_config"]

_CHANNELS = ["T1", "T1C", "T2", "FLAIR"]


class DataTable(StrictModel):
    """``[data]``."""

    manifest: str = ""
    dirs: list[str] = Field(default_factory=list)
    layout: str = "auto"
    synth: dict[str, Any] = Field(default_factory=dict, description="generate_subject keywords plus subjects, seed")
    val_subjects: int = Field(default=2, ge=0)
    val_subsets: dict[str, list[str]] = Field(default_factory=dict)
    real_negatives: str = ""
    real_negative_repeats: int = Field(default=1, ge=1)


class NetworkTable(StrictModel):
    """``[network]`` (``[network.encoder]`` holds models.encoders.build_encoder keys)."""

    num_classes: int = Field(default=4, ge=2)
    norm: str = "instance"
    full_resolution: bool = True
    encoder_checkpoint: str = ""
    encoder: dict[str, Any] | None = None


class PreprocessingTable(StrictModel):
    """``[preprocessing]``."""

    channels: list[str] = Field(default_factory=lambda: list(_CHANNELS), min_length=1)
    spacing_mm: list[float] = Field(default_factory=lambda: [2.0, 2.0, 2.0], min_length=3, max_length=3)
    roi_size: list[int] = Field(default_factory=lambda: [64, 64, 64], min_length=3, max_length=3)
    inference_roi_size: list[int] | None = Field(default=None, min_length=3, max_length=3)
    overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    min_component_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    normalize: str = "zscore_foreground"
    mask_outside_head: bool = False
    bias_correction_channels: list[str] = Field(default_factory=list)


class HardNegativesTable(StrictModel):
    """``[train.hard_negatives]``."""

    bundle: str = Field(min_length=1)
    fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    subsets: list[str] = Field(default_factory=lambda: ["all", "FLAIR", "T1C"], min_length=1)
    shift_average: list[int] | None = Field(default=None, min_length=1)


class TrainTable(StrictModel):
    """``[train]``."""

    max_steps: int = Field(default=1000, ge=0)
    batch_size: int = Field(default=2, ge=1)
    samples_per_subject: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    sequence_dropout: float = Field(default=0.5, ge=0.0, le=1.0)
    threads: int = Field(default=1, ge=1)
    log_every: int = Field(default=10, ge=1)
    checkpoint_every: int = Field(default=100, ge=1)
    val_every: int = Field(default=0, ge=0)
    out_dir: str = ""
    init_weights: str = ""
    pos_neg: list[float] = Field(default_factory=lambda: [2.0, 1.0], min_length=2, max_length=2)
    intensity_augment: bool = False
    sequence_dropout_weights: dict[str, float] = Field(default_factory=dict)
    silent_subsets: list[str] = Field(default_factory=list)
    domain_randomisation: bool | dict[str, Any] = False
    hard_negatives: HardNegativesTable | None = None


class BundleTable(StrictModel):
    """``[bundle]``."""

    out: str = ""
    version: str = "0.1.0"
    half: bool = True
    description: str = ""
    command: str = ""


class FinetuneFile(StrictModel):
    """The whole fine-tuning TOML file, as written (see the module docstring)."""

    name: str = "segmenter"
    seed: int = 0
    data: DataTable = Field(default_factory=DataTable)
    network: NetworkTable = Field(default_factory=NetworkTable)
    preprocessing: PreprocessingTable = Field(default_factory=PreprocessingTable)
    train: TrainTable = Field(default_factory=TrainTable)
    bundle: BundleTable = Field(default_factory=BundleTable)


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
    bias_correction_channels: list[str] = field(default_factory=list)
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
    hard_negatives: dict[str, Any] | None = None
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


def _check_names(names: list[str], channels: list[str], key: str, where: str, also: str = "") -> None:
    """Raise the one sentence for names in ``key`` that are not channels (``also``: other accepted words)."""
    unknown = [n for n in names if n not in channels]
    if unknown:
        raise ValueError(f"{where}: config key '{key}' names {', '.join(unknown)}, which is not among the channels "
                         f"({', '.join(channels)}){also}.")


def _dropout_weights(raw: dict[str, float], channels: list[str], where: str) -> dict[tuple[int, ...], float]:
    """Turn ``{"T2+FLAIR": 2.0}`` into ``{(2, 3): 2.0}`` (channel indices), checking every name and weight."""
    key = "config key 'train.sequence_dropout_weights'"
    out: dict[tuple[int, ...], float] = {}
    for subset, weight in raw.items():
        names = [n.strip() for n in str(subset).split("+")]
        _check_names(names, channels, "train.sequence_dropout_weights", where)
        if weight < 0:
            raise ValueError(f"{where}: {key} {subset} = {weight!r} must be a number ≥ 0.")
        out[tuple(sorted({channels.index(n) for n in names}))] = float(weight)
    return out


def _silent_subsets(raw: list[str], channels: list[str], where: str) -> list[tuple[int, ...]]:
    """``["T1", "T1+T1C"]`` → ``[(0,), (0, 1)]`` (channel indices), checking every name."""
    out = []
    for subset in raw:
        names = [n.strip() for n in str(subset).split("+")]
        _check_names(names, channels, "train.silent_subsets", where)
        out.append(tuple(sorted({channels.index(n) for n in names})))
    return out


def _bias_channels(raw: list[str], channels: list[str], where: str) -> list[str]:
    """``[preprocessing] bias_correction_channels``: each name must be a channel."""
    _check_names(raw, channels, "preprocessing.bias_correction_channels", where)
    return list(raw)


def _hard_negatives(raw: HardNegativesTable | None, channels: list[str], where: str) -> dict[str, Any] | None:
    """``[train.hard_negatives]`` → ``{bundle, fraction, subsets, shift_average}``, subsets' names checked."""
    if raw is None:
        return None
    for subset in raw.subsets:
        if subset != "all":
            _check_names(subset.split("+"), channels, "train.hard_negatives.subsets", where, also=' or "all"')
    shifts = None
    if raw.shift_average is not None:  # the card's rule (models.engine.shift_average), said of this key
        from models.bundle import BundleError
        from models.engine import shift_average

        try:
            shifts = shift_average(raw.bundle, list(raw.shift_average))
        except BundleError:
            raise ValueError(f"{where}: config key 'train.hard_negatives.shift_average' is {raw.shift_average!r}, "
                             "not a list of distinct whole numbers of model-grid voxels from 0 to 64.") from None
    return {"bundle": raw.bundle, "fraction": raw.fraction, "subsets": list(raw.subsets), "shift_average": shifts}


def _domain_randomisation(raw: bool | dict[str, Any], normalize: str, where: str) -> dict[str, Any] | None:
    """``[train] domain_randomisation``: false / true / a table → None or the options (checked)."""
    key = "config key 'train.domain_randomisation'"
    if isinstance(raw, bool):
        opts: dict[str, Any] | None = {} if raw else None
    else:
        opts = {k: v for k, v in raw.items() if k != "enabled"} if raw.get("enabled", True) else None
    if opts is None:
        return None
    from training.datasets import DR_DEFAULTS

    for name in sorted(opts):
        if name not in DR_DEFAULTS:
            raise ValueError(f"{where}: config key 'train.domain_randomisation.{name}': unknown key"
                             f"{did_you_mean(name, [*DR_DEFAULTS, 'enabled'])}.")
    if normalize != "zscore_per_channel":
        raise ValueError(f"{where}: {key} needs [preprocessing] normalize = \"zscore_per_channel\" (it re-normalises "
                         f"each channel of a randomised crop on its own); got {normalize!r}.")
    return opts


def parse_finetune_config(raw: dict[str, Any], where: str = "fine-tuning config") -> FinetuneConfig:
    """Turn a parsed TOML dict into a :class:`FinetuneConfig`.

    Raises
    ------
    ValueError
        On an unknown key (with the nearest known one), a bad value or a missing
        ``[network.encoder]`` table: one ``config key '...'`` sentence per problem.
    """
    try:
        f = FinetuneFile.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{where}: " + " ".join(error_sentences(exc, FinetuneFile))) from None
    data, net, pre, tr, bun = f.data, f.network, f.preprocessing, f.train, f.bundle
    channels = list(pre.channels)
    if net.encoder is None:
        raise ValueError(f"{where}: config key 'network.encoder': missing (a table, for example name = \"swin3d\").")
    from models.preprocess import NORMALIZATIONS

    if pre.normalize not in NORMALIZATIONS:
        raise ValueError(f"{where}: config key 'preprocessing.normalize': {pre.normalize!r} is not one of "
                         f"{', '.join(NORMALIZATIONS)}.")
    encoder = dict(net.encoder)
    encoder.setdefault("in_channels", len(channels))
    network: dict[str, Any] = {"encoder": encoder, "num_classes": net.num_classes, "norm": net.norm,
                               "full_resolution": net.full_resolution}
    if net.encoder_checkpoint:
        network["encoder_checkpoint"] = net.encoder_checkpoint
    subsets = data.val_subsets or {"all": channels, "FLAIR": ["FLAIR"]}
    return FinetuneConfig(
        name=f.name,
        network=network,
        channels=channels,
        seed=f.seed,
        manifest=data.manifest,
        data_dirs=list(data.dirs),
        layout=data.layout,
        synth=dict(data.synth),
        val_subjects=data.val_subjects,
        val_subsets={k: list(v) for k, v in subsets.items()},
        spacing_mm=list(pre.spacing_mm),
        roi_size=list(pre.roi_size),
        inference_roi_size=list(pre.inference_roi_size or pre.roi_size),
        min_component_fraction=pre.min_component_fraction,
        normalize=pre.normalize,
        mask_outside_head=pre.mask_outside_head,
        bias_correction_channels=_bias_channels(pre.bias_correction_channels, channels, where),
        overlap=pre.overlap,
        max_steps=tr.max_steps,
        batch_size=tr.batch_size,
        samples_per_subject=tr.samples_per_subject,
        lr=tr.lr,
        weight_decay=tr.weight_decay,
        sequence_dropout=tr.sequence_dropout,
        sequence_dropout_weights=_dropout_weights(tr.sequence_dropout_weights, channels, where),
        silent_subsets=_silent_subsets(tr.silent_subsets, channels, where),
        threads=tr.threads,
        init_weights=tr.init_weights,
        pos_neg=list(tr.pos_neg),
        intensity_augment=tr.intensity_augment,
        domain_randomisation=_domain_randomisation(tr.domain_randomisation, pre.normalize, where),
        real_negatives=data.real_negatives,
        real_negative_repeats=data.real_negative_repeats,
        hard_negatives=_hard_negatives(tr.hard_negatives, channels, where),
        log_every=tr.log_every,
        checkpoint_every=tr.checkpoint_every,
        val_every=tr.val_every,
        out_dir=tr.out_dir or f"var/finetune/{f.name}",
        bundle_out=bun.out,
        bundle_version=bun.version,
        bundle_half=bun.half,
        description=bun.description,
        command=bun.command,
        raw=raw,
    )


def load_finetune_config(path: str | Path) -> FinetuneConfig:
    """Read a fine-tuning TOML file.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not valid TOML or has an unknown or invalid key.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"fine-tuning config {p} does not exist.")
    return parse_finetune_config(load_toml(p, "fine-tuning config"), where=f"fine-tuning config {p}")
