"""MONAI Bundles (the Model Zoo layout) as mrinode models.

A MONAI Bundle folder::

    configs/metadata.json    MONAI metadata (version, network_data_format, …)
    configs/inference.json   MONAI config: ``network_def`` (and, optionally, ``inferer``, transforms…)
    configs/mrinode.json     the mrinode sidecar (or the same keys under ``"mrinode"`` in metadata.json)
    models/model.pt          state dict for ``network_def`` (or ``{"model": state_dict}``), or
    models/model.ts          a TorchScript network (used when there is no model.pt)

The configs are read with MONAI's own :class:`monai.bundle.ConfigParser`, and the network is
``network_def`` instantiated by it (``_target_`` a MONAI network name, or any dotted path).

The sidecar says what MONAI's metadata cannot: which sequence feeds each input channel and
which coded segment each output channel is::

    {
      "name": "flair-lesion",                     # optional; the folder name when omitted
      "channels": ["FLAIR"],                      # sequence label per input channel
      "required_sequences": [], "optional_sequences": ["FLAIR"],   # optional
      "labels": [{"value": 1, "name": "Lesion", "category": ["49755003", "SCT", "…"],
                  "type": ["52988006", "SCT", "Lesion"], "colour": [255, 0, 255]}],
      "preprocessing": {"spacing_mm": [2, 2, 2], "normalize": "zscore_per_channel"},  # optional
      "size_divisor": 1                           # optional: input sizes the network needs
    }

Preprocessing choice: the node hands a model volumes that are already on one reference grid
in memory, and wants labels back on that grid; a Model Zoo ``preprocessing`` starts with
``LoadImaged`` (file paths) and its ``postprocessing`` ends with ``SaveImaged`` (files), so
they are not run. A MONAI Bundle runs through the same steps as a native bundle
(:class:`models.engine.InferenceEngine`: RAS model grid, z-score, sliding window, softmax,
resampling back, ``label_requires``/head mask/OOD post-processing), with their parameters from
the sidecar's ``preprocessing`` or, where it is silent, read from ``inference.json``
(``Spacingd`` ``pixdim``, ``NormalizeIntensityd`` ``channel_wise``, the
``SlidingWindowInferer``'s ``roi_size`` and ``overlap``). The network's output channels are
softmax classes with 0 the background (a sigmoid multi-label bundle is refused).

Trust: a MONAI config is code (``_target_`` imports any module, ``$`` expressions are Python),
so install only MONAI Bundles you trust, as you would a Python package. Only ``network_def``
(and what it references) is evaluated; ``model.pt`` is read with ``torch.load(weights_only=True)``.
:func:`check_bundle` evaluates nothing (JSON only, no torch import): the node can call it at
start-up.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.bundle import Bundle, BundleError, Card, sha256_file

if TYPE_CHECKING:
    from models.engine import InferenceEngine

__all__ = [
    "INFERENCE",
    "METADATA",
    "SIDECAR",
    "MonaiBundle",
    "check_bundle",
    "get_engine",
    "load_monai_bundle",
    "read_card",
]

METADATA = "configs/metadata.json"
INFERENCE = "configs/inference.json"
SIDECAR = "configs/mrinode.json"
MODEL_PT = "models/model.pt"
MODEL_TS = "models/model.ts"
_SIDECAR_KEY = "mrinode"


def _read_json(folder: Path, rel: str) -> dict[str, Any]:
    path = folder / rel
    if not path.is_file():
        raise BundleError(f"MONAI bundle {folder}: file {rel} is missing.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"MONAI bundle {folder}: file {rel} is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise BundleError(f"MONAI bundle {folder}: file {rel} holds a {type(data).__name__}, not a JSON object.")
    return data


def _sidecar(folder: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The sidecar and the name of where it came from (file, or metadata key)."""
    if (folder / SIDECAR).is_file():
        return _read_json(folder, SIDECAR), SIDECAR
    if isinstance(meta.get(_SIDECAR_KEY), dict):
        return dict(meta[_SIDECAR_KEY]), f"{METADATA} key {_SIDECAR_KEY!r}"
    raise BundleError(f"MONAI bundle {folder}: neither {SIDECAR} nor a {_SIDECAR_KEY!r} object in {METADATA} says "
                      f"which sequence feeds each input channel and which segment each output is.")


def _weights_file(folder: Path) -> Path:
    for rel in (MODEL_PT, MODEL_TS):
        if (folder / rel).is_file():
            return folder / rel
    raise BundleError(f"MONAI bundle {folder}: file {MODEL_PT} (or {MODEL_TS}) is missing.")


def _sequence_labels() -> set[str]:
    from dicom_node.sequences import SequenceLabel

    return {m.value for m in SequenceLabel} - {"UNKNOWN", "OTHER", "LOCALIZER"}


def _check_sequences(folder: Path, where: str, key: str, values: Any) -> list[str]:
    import difflib

    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BundleError(f"MONAI bundle {folder}: {where} key {key!r} must be a list of sequence labels.")
    known = _sequence_labels()
    for i, v in enumerate(values):
        if v not in known:
            close = difflib.get_close_matches(v.upper(), sorted(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise BundleError(f"MONAI bundle {folder}: {where} key '{key}[{i}]' is {v!r}, not a sequence label "
                              f"(one of {', '.join(sorted(known))}).{hint}")
    return list(values)


def _channels(folder: Path, where: str, side: dict[str, Any]) -> list[str]:
    raw = side.get("channels")
    if raw is None:
        raise BundleError(f"MONAI bundle {folder}: {where} lacks the key 'channels' (the sequence label of each "
                          f"input channel).")
    if isinstance(raw, dict):  # {"0": "T1", "1": "FLAIR"} as in MONAI's channel_def
        try:
            raw = [raw[k] for k in sorted(raw, key=int)]
        except ValueError:
            raise BundleError(f"MONAI bundle {folder}: {where} key 'channels' maps channel numbers to sequence "
                              f"labels; its keys must be integers.") from None
    return _check_sequences(folder, where, "channels", raw)


def _triple(folder: Path, where: str, key: str, v: Any) -> tuple[str, str, str]:
    if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, str) and x for x in v)):
        raise BundleError(f"MONAI bundle {folder}: {where} key {key!r} must be [code, scheme, meaning] "
                          f"(for example [\"52988006\", \"SCT\", \"Lesion\"]).")
    return (v[0], v[1], v[2])


def _labels(folder: Path, where: str, side: dict[str, Any], n_out: int | None) -> list[dict[str, Any]]:
    raw = side.get("labels")
    if not isinstance(raw, list) or not raw:
        raise BundleError(f"MONAI bundle {folder}: {where} lacks the key 'labels' (a list of the output labels "
                          f"with value, name, category, type and colour).")
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i, lab in enumerate(raw):
        key = f"labels[{i}]"
        if not isinstance(lab, dict):
            raise BundleError(f"MONAI bundle {folder}: {where} key {key!r} must be an object.")
        for k in ("value", "name", "category", "type", "colour"):
            if k not in lab:
                raise BundleError(f"MONAI bundle {folder}: {where} key '{key}.{k}' is missing.")
        value = lab["value"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BundleError(f"MONAI bundle {folder}: {where} key '{key}.value' must be an output channel number "
                              f"≥ 1 (0 is the background).")
        if n_out is not None and value >= n_out:
            raise BundleError(f"MONAI bundle {folder}: {where} key '{key}.value' is {value}, but {METADATA} "
                              f"network_data_format says the network has {n_out} output channels.")
        if value in seen:
            raise BundleError(f"MONAI bundle {folder}: {where} key '{key}.value' repeats label {value}.")
        seen.add(value)
        colour = lab["colour"]
        if not (isinstance(colour, list) and len(colour) == 3
                and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)):
            raise BundleError(f"MONAI bundle {folder}: {where} key '{key}.colour' must be three integers 0-255.")
        if not isinstance(lab["name"], str) or not lab["name"]:
            raise BundleError(f"MONAI bundle {folder}: {where} key '{key}.name' must be a non-empty string.")
        out.append({**lab, "category": list(_triple(folder, where, f"{key}.category", lab["category"])),
                    "type": list(_triple(folder, where, f"{key}.type", lab["type"]))})
    return out


def _io_channels(meta: dict[str, Any], side: str) -> int | None:
    """``num_channels`` of the first input or output in MONAI's ``network_data_format`` (None when absent)."""
    fmt = meta.get("network_data_format")
    if not isinstance(fmt, dict) or not isinstance(fmt.get(side), dict) or not fmt[side]:
        return None
    first = next(iter(fmt[side].values()))
    n = first.get("num_channels") if isinstance(first, dict) else None
    return int(n) if isinstance(n, int) else None


def _numbers(v: Any, n: int | None = 3) -> list[float] | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and n is not None:
        return [float(v)] * n
    if isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return [float(x) for x in v]
    return None


def _transforms(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    pre = cfg.get("preprocessing")
    items = pre.get("transforms") if isinstance(pre, dict) else pre
    return [t for t in items if isinstance(t, dict)] if isinstance(items, list) else []


def _preprocessing_from_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the native steps need, read from a MONAI inference config where it says it plainly."""
    out: dict[str, Any] = {}
    for t in _transforms(cfg):
        target = str(t.get("_target_", "")).rsplit(".", 1)[-1]
        if target in ("Spacingd", "Spacing"):
            sp = _numbers(t.get("pixdim"))
            if sp and len(sp) == 3:
                out["spacing_mm"] = sp
        elif target in ("NormalizeIntensityd", "NormalizeIntensity"):
            out["normalize"] = "zscore_per_channel" if t.get("channel_wise") is True else "zscore_foreground"
    inferer = cfg.get("inferer")
    if isinstance(inferer, dict) and str(inferer.get("_target_", "")).endswith("SlidingWindowInferer"):
        roi = _numbers(inferer.get("roi_size"))
        if roi and len(roi) == 3:
            out["roi_size"] = [int(r) for r in roi]
        ov = inferer.get("overlap")
        if isinstance(ov, (int, float)) and not isinstance(ov, bool):
            out["overlap"] = float(ov)
    return out


def _card(folder: Path, meta: dict[str, Any], cfg: dict[str, Any], weights: Path, sha: str) -> Card:
    side, where = _sidecar(folder, meta)
    channels = _channels(folder, where, side)
    n_in = _io_channels(meta, "inputs")
    if n_in is not None and n_in != len(channels):
        raise BundleError(f"MONAI bundle {folder}: {where} key 'channels' names {len(channels)} sequence(s) but "
                          f"{METADATA} network_data_format says the network takes {n_in} input channel(s).")
    labels = _labels(folder, where, side, _io_channels(meta, "outputs"))
    if "version" not in meta:
        raise BundleError(f"MONAI bundle {folder}: {METADATA} lacks the key 'version'.")
    name = side.get("name", folder.name)
    if not isinstance(name, str) or not name:
        raise BundleError(f"MONAI bundle {folder}: {where} key 'name' must be a non-empty string.")
    required = _check_sequences(folder, where, "required_sequences", side.get("required_sequences", []))
    optional = _check_sequences(folder, where, "optional_sequences",
                                side.get("optional_sequences", [c for c in channels if c not in required]))
    for key, seqs in (("required_sequences", required), ("optional_sequences", optional)):
        stray = [s for s in seqs if s not in channels]
        if stray:
            raise BundleError(f"MONAI bundle {folder}: {where} key {key!r} names {', '.join(stray)}, which no "
                              f"input channel takes (channels: {', '.join(channels)}).")
    activation = side.get("output_activation", "softmax")
    if activation != "softmax":
        raise BundleError(f"MONAI bundle {folder}: {where} key 'output_activation' is {activation!r}; only "
                          f"'softmax' (mutually exclusive classes, 0 = background) is supported.")
    side_pre = side.get("preprocessing", {})
    if not isinstance(side_pre, dict):
        raise BundleError(f"MONAI bundle {folder}: {where} key 'preprocessing' must be an object.")
    pre = {"orientation": "RAS", "spacing_mm": [1.0, 1.0, 1.0], "normalize": "zscore_per_channel",
           "roi_size": [96, 96, 96], "overlap": 0.25}
    pre.update(_preprocessing_from_config(cfg))
    pre.update(side_pre)
    if weights.name == "model.pt" and "network_def" not in cfg:
        raise BundleError(f"MONAI bundle {folder}: {INFERENCE} lacks the key 'network_def', which {MODEL_PT} (a "
                          f"state dict) needs.")
    desc = str(meta.get("description", "")).strip()
    card: dict[str, Any] = {
        k: v for k, v in side.items()
        if k not in ("channels", "labels", "preprocessing", "size_divisor", "output_activation")
    }
    card.update({
        "name": name,
        "version": str(meta["version"]),
        "task": side.get("task", "segmentation"),
        "labels": labels,
        "channels": channels,
        "required_sequences": required,
        "optional_sequences": optional,
        "preprocessing": pre,
        "network": {"format": "monai_bundle", "weights": weights.relative_to(folder).as_posix(),
                    "network_def": cfg.get("network_def"), "size_divisor": int(side.get("size_divisor", 1))},
        "training": {"monai_version": meta.get("monai_version"), "authors": meta.get("authors"),
                     "data_source": meta.get("data_source")},
        "intended_use": str(side.get("intended_use") or desc or meta.get("task") or "MONAI bundle"),
        "algorithm": side.get("algorithm") or {
            "parameters": {"format": "MONAI Bundle", "monai_version": str(meta.get("monai_version", ""))}},
        "weights_sha256": sha,
    })
    try:
        return Card.from_dict(card, where=f"MONAI bundle {folder}: {where}")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"MONAI bundle {folder}: {where} does not make a model card ({exc}).") from None


def read_card(folder: str | Path, hash_weights: bool = False) -> Card:
    """Read a MONAI Bundle's card (metadata + inference config + sidecar; the weights are not loaded).

    Parameters
    ----------
    folder : str or Path
        The bundle folder.
    hash_weights : bool
        Fill in ``weights_sha256`` (reads the whole weights file); left empty otherwise.

    Raises
    ------
    BundleError
        With a sentence naming the file and key at fault.
    """
    root = Path(folder)
    meta = _read_json(root, METADATA)
    cfg = _read_json(root, INFERENCE)
    weights = _weights_file(root)
    return _card(root, meta, cfg, weights, sha256_file(weights) if hash_weights else "")


def check_bundle(path: str | Path) -> None:
    """Check a MONAI Bundle without building its network (no torch import): files, JSON, sidecar keys, labels.

    Parameters
    ----------
    path : str or Path
        The bundle folder.

    Raises
    ------
    BundleError
        With a sentence naming the file and key at fault.
    """
    read_card(path)


@dataclass
class MonaiBundle(Bundle):
    """A MONAI Bundle seen as a :class:`models.bundle.Bundle`, so :class:`models.engine.InferenceEngine` runs it."""

    weights_file: Path = field(default_factory=Path)

    @property
    def weights_path(self) -> Path:
        """``models/model.pt`` or ``models/model.ts``."""
        return self.weights_file

    def build_network(self, device: str = "cpu") -> Any:
        """Instantiate ``network_def`` with MONAI's ConfigParser and load ``model.pt``, or load ``model.ts``.

        Raises
        ------
        BundleError
            If the network cannot be built or the weights do not fit it.
        """
        import torch
        from monai.bundle import ConfigParser

        net: Any
        if self.weights_file.suffix == ".ts":
            try:
                net = torch.jit.load(str(self.weights_file), map_location="cpu")
            except RuntimeError as exc:
                raise BundleError(f"MONAI bundle {self.path}: {MODEL_TS} is not a TorchScript network ({exc}).") from None
        else:
            parser = ConfigParser()
            parser.read_meta(str(self.path / METADATA))
            parser.read_config(str(self.path / INFERENCE))
            parser["bundle_root"] = str(self.path)
            parser["device"] = "cpu"
            try:
                net = parser.get_parsed_content("network_def", instantiate=True)
            except Exception as exc:  # MONAI raises plain Exceptions with the component's config
                raise BundleError(f"MONAI bundle {self.path}: {INFERENCE} key 'network_def' cannot be built "
                                  f"({type(exc).__name__}: {exc}).") from None
            state = torch.load(str(self.weights_file), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("model"), dict):
                state = state["model"]  # a CheckpointLoader-style {"model": state_dict}
            if not isinstance(state, dict):
                raise BundleError(f"MONAI bundle {self.path}: {MODEL_PT} holds no state dict.")
            try:
                net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                                    strict=True)
            except RuntimeError as exc:
                raise BundleError(f"MONAI bundle {self.path}: {MODEL_PT} does not fit {INFERENCE} "
                                  f"'network_def' ({exc}).") from None
        divisor = int(getattr(net, "size_divisor", self.card.network.get("size_divisor", 1)))
        return _network_cls()(net, divisor).to(device).eval()


@functools.cache
def _network_cls() -> type:
    """The wrapper module class (built on first use, so that importing this module does not import torch)."""
    import torch
    from torch import nn

    class Network(nn.Module):
        """A bundle's network with the ``size_divisor`` the engine reads; deep-supervision outputs reduced to the first."""

        def __init__(self, net: nn.Module, size_divisor: int) -> None:
            super().__init__()
            self.net = net
            self.size_divisor = max(1, int(size_divisor))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.net(x)
            if isinstance(out, (list, tuple)):
                out = out[0]
            if not isinstance(out, torch.Tensor):
                raise BundleError(f"the network returned {type(out).__name__}, not a tensor of logits.")
            return out

    return Network


def load_monai_bundle(path: str | Path) -> MonaiBundle:
    """Read a MONAI Bundle (card checked, weights hashed; the network is built by :meth:`MonaiBundle.build_network`)."""
    root = Path(path)
    meta = _read_json(root, METADATA)
    cfg = _read_json(root, INFERENCE)
    weights = _weights_file(root)
    card = _card(root, meta, cfg, weights, sha256_file(weights))
    from models.preprocess import NORMALIZATIONS  # (imports torch: checked on load, not by check_bundle)

    if card.preprocessing["normalize"] not in NORMALIZATIONS:
        raise BundleError(f"MONAI bundle {root}: {_sidecar(root, meta)[1]} key 'preprocessing.normalize' is "
                          f"{card.preprocessing['normalize']!r}, not one of {', '.join(NORMALIZATIONS)}.")
    return MonaiBundle(path=root, card=card, weights_file=weights)


def _fingerprint(root: Path) -> str:
    """SHA-256 over the weights and the three configs: any change on disk gives a new engine."""
    h = hashlib.sha256()
    h.update(sha256_file(_weights_file(root)).encode())
    for rel in (METADATA, INFERENCE, SIDECAR):
        p = root / rel
        h.update(rel.encode() + (p.read_bytes() if p.is_file() else b"-"))
    return h.hexdigest()


_engines: dict[tuple[str, str, str, float | None], InferenceEngine] = {}
_engines_lock = threading.Lock()
_MAX_ENGINES = 4


def get_engine(path: str | Path, device: str = "auto", overlap: float | None = None) -> tuple[InferenceEngine, bool]:
    """Return a warm engine for a MONAI Bundle folder and whether it was loaded now.

    Cached (least recently used first out, 4 engines) by folder, the SHA-256 of weights and
    configs, device and overlap: a bundle changed on disk is loaded again.

    Raises
    ------
    BundleError
        If the bundle is invalid.
    """
    from models.engine import InferenceEngine, resolve_device

    root = Path(path).resolve()
    key = (str(root), _fingerprint(root), resolve_device(device), overlap)
    with _engines_lock:
        eng = _engines.pop(key, None)
        if eng is not None:
            _engines[key] = eng  # most recently used last
            return eng, False
        eng = InferenceEngine(load_monai_bundle(root), device=key[2], overlap=overlap)
        _engines[key] = eng
        while len(_engines) > _MAX_ENGINES:
            _engines.pop(next(iter(_engines)))
        return eng, True
