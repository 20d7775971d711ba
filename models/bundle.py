"""Model bundles: ``weights.safetensors`` + ``card.json`` in one folder.

The card says what the model is (name, version, task, labels with SNOMED CT codes and
colours), what it needs (required and optional sequences, preprocessing), how it was made
(network config, training data, metrics) and the SHA-256 of its weights. Loading checks the
hash and refuses a bundle whose card and weights disagree.

Bundles are found by name in ``models/bundles/<name>/`` (shipped with the package), in the
folders passed as ``search_paths``, and in ``$MRINODE_MODELS_DIR`` (read at call time).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Bundle",
    "BundleError",
    "Card",
    "LabelInfo",
    "bundle_dirs",
    "list_bundles",
    "load_bundle",
    "read_card",
    "save_bundle",
    "sha256_file",
]

CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.safetensors"
NOT_CLINICAL = "Demonstration model trained on synthetic data; not for clinical use."


class BundleError(ValueError):
    """A bundle that cannot be found or used, with a sentence saying why."""


def _code(value: Any, where: str) -> tuple[str, str, str]:
    """A ``[code, scheme, meaning]`` triple of strings, or :class:`BundleError` naming ``where``."""
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(isinstance(x, str) and x.strip() for x in value):
        raise BundleError(f"{where} must be [code, scheme, meaning] (three non-empty strings), got {value!r}.")
    return (str(value[0]), str(value[1]), str(value[2]))


@dataclass
class LabelInfo:
    """One output label, as the SEG and the SR describe it.

    Attributes
    ----------
    value : int
        The label value in the model's label map (> 0 for segmentation; a
        classifier's class index may be 0).
    name : str
        Human-readable name (``"Necrotic core"``): the SEG's SegmentLabel and the SR's wording.
    category : tuple of (code, scheme, meaning)
        SNOMED CT segmented property category.
    type : tuple of (code, scheme, meaning)
        SNOMED CT segmented property type.
    colour : tuple of int
        Display colour as sRGB 0-255.
    tracking_id : str
        Short tracking identifier (``"ET"``); the name when empty.
    anatomic_region : tuple of (code, scheme, meaning) or None
        Where the finding lies (AnatomicRegionSequence), e.g. SNOMED CT Brain.
    """

    value: int
    name: str
    category: tuple[str, str, str]
    type: tuple[str, str, str]
    colour: tuple[int, int, int]
    tracking_id: str = ""
    anatomic_region: tuple[str, str, str] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "label") -> LabelInfo:
        """Build from the card's JSON form.

        Raises
        ------
        BundleError
            A missing key, a value that is not an integer >= 0, a code that is not a
            ``[code, scheme, meaning]`` triple or a colour outside 0..255 (the message names
            ``where`` and the key).
        """
        missing = [k for k in ("value", "name", "category", "type", "colour") if k not in d]
        if missing:
            raise BundleError(f"{where} lacks the key(s) {', '.join(missing)}.")
        try:
            value = int(d["value"])
        except (TypeError, ValueError):
            value = -1
        if value < 0:
            raise BundleError(f"{where}: key 'value' must be an integer >= 0, got {d['value']!r}.")
        colour = d["colour"]
        if (not isinstance(colour, (list, tuple)) or len(colour) != 3
                or not all(isinstance(c, int) and 0 <= c <= 255 for c in colour)):
            raise BundleError(f"{where}: key 'colour' must be three integers 0-255, got {colour!r}.")
        region = d.get("anatomic_region")
        return cls(
            value=value,
            name=str(d["name"]),
            category=_code(d["category"], f"{where}: key 'category'"),
            type=_code(d["type"], f"{where}: key 'type'"),
            colour=(int(colour[0]), int(colour[1]), int(colour[2])),
            tracking_id=str(d.get("tracking_id", "") or ""),
            anatomic_region=None if region is None else _code(region, f"{where}: key 'anatomic_region'"),
        )


@dataclass
class Card:
    """The model card stored as ``card.json``.

    Attributes
    ----------
    name, version, task : str
        Identity; ``task`` is ``"segmentation"`` for the tumour models.
    labels : list of LabelInfo
        Output labels (background 0 is implicit).
    required_sequences, optional_sequences : list of str
        Sequence labels (``dicom_node.sequences.SequenceLabel`` values). Every required
        sequence must be present; optional ones are used when present; at least one of
        ``channels`` (the input order) must be present.
    channels : list of str
        The sequence fed to each input channel.
    preprocessing : dict
        ``spacing_mm`` (model grid), ``orientation`` (``"RAS"``), ``normalize``
        (``"zscore_foreground"``), ``roi_size`` and ``overlap`` for sliding windows.
    network : dict
        The :func:`models.segmenter.build_segmenter` config.
    training : dict
        Training data description, config, manifest hash.
    metrics : dict
        Evaluation figures.
    intended_use : str
        Plain words on what the model is for.
    weights_sha256 : str
        SHA-256 of ``weights.safetensors``.
    algorithm : dict
        How results name the algorithm (AlgorithmIdentificationSequence): ``name`` and
        ``version`` (default: the card's), ``family`` (``[code, scheme, meaning]``, default
        DCM 123110 "Artificial Intelligence"), ``source`` and ``parameters`` (str to str).
    """

    name: str
    version: str
    task: str
    labels: list[LabelInfo]
    channels: list[str]
    required_sequences: list[str]
    optional_sequences: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    intended_use: str = NOT_CLINICAL
    weights_sha256: str = ""
    algorithm: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "card") -> Card:
        """Build from the JSON form.

        Raises
        ------
        BundleError
            If a required key is missing, a label is malformed, two labels share a value,
            a required or optional sequence is not one of ``channels``, or ``algorithm``
            is malformed (the message names ``where`` and the key).
        """
        need = ("name", "version", "task", "labels", "channels", "required_sequences", "network")
        missing = [k for k in need if k not in d]
        if missing:
            raise BundleError(f"{where} lacks the key(s) {', '.join(missing)}.")
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in d.items() if k in known}
        labels = [LabelInfo.from_dict(x, f"{where}: labels[{n}]") for n, x in enumerate(d["labels"])]
        values = [lab.value for lab in labels]
        if d["task"] == "segmentation" and 0 in values:
            raise BundleError(f"{where}: key 'labels' describes value 0, which is the background of a segmentation.")
        if len(set(values)) != len(values):
            raise BundleError(f"{where}: key 'labels' has two labels with one value ({sorted(values)}).")
        kwargs["labels"] = labels
        channels = [str(c) for c in d["channels"]]
        for key in ("required_sequences", "optional_sequences"):
            stray = [s for s in d.get(key, []) if s not in channels]
            if stray:
                raise BundleError(f"{where}: key {key!r} names {', '.join(map(str, stray))}, which is not one of "
                                  f"'channels' ({', '.join(channels)}).")
        algorithm = d.get("algorithm", {}) or {}
        if not isinstance(algorithm, dict):
            raise BundleError(f"{where}: key 'algorithm' must be a table, got {algorithm!r}.")
        if "family" in algorithm:
            _code(algorithm["family"], f"{where}: key 'algorithm.family'")
        if not isinstance(algorithm.get("parameters", {}), dict):
            raise BundleError(f"{where}: key 'algorithm.parameters' must be a table of strings.")
        return cls(**kwargs)

    def algorithm_fields(self) -> dict[str, Any]:
        """The algorithm identification with the defaults filled in.

        Returns
        -------
        dict
            ``name``, ``version``, ``family`` (a code triple or None for the default),
            ``source`` (str or None) and ``parameters`` (str to str).
        """
        a = self.algorithm or {}
        family = a.get("family")
        return {
            "name": str(a.get("name") or self.name),
            "version": str(a.get("version") or self.version),
            "family": tuple(family) if family else None,
            "source": str(a["source"]) if a.get("source") else None,
            "parameters": {str(k): str(v) for k, v in (a.get("parameters") or {}).items()},
        }


@dataclass
class Bundle:
    """A loaded bundle: its folder and card (weights are read by :meth:`build_network`)."""

    path: Path
    card: Card

    @property
    def name(self) -> str:
        """The card's name."""
        return self.card.name

    @property
    def weights_path(self) -> Path:
        """The weights file."""
        return self.path / WEIGHTS_FILE

    def build_network(self, device: str = "cpu") -> Any:
        """Build the network from the card and load the weights (eval mode).

        Parameters
        ----------
        device : str
            Where to put the weights.

        Returns
        -------
        torch.nn.Module
            The network.

        Raises
        ------
        BundleError
            If the weights do not fit the network config.
        """
        from safetensors.torch import load_file

        from models.segmenter import build_segmenter

        net = build_segmenter(self.card.network)
        state = load_file(str(self.weights_path), device="cpu")
        state = {k: v.float() for k, v in state.items()}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BundleError(f"bundle {self.name!r}: weights do not fit the card's network config ({exc}).") from exc
        return net.to(device).eval()


def sha256_file(path: str | Path) -> str:
    """Return the hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundle_dirs(search_paths: list[str | Path] | None = None) -> list[Path]:
    """Return the folders searched for bundles, in order.

    Parameters
    ----------
    search_paths : list of str or Path, optional
        Extra folders (for example the node's configured models dir), searched first.
    """
    dirs = [Path(p) for p in (search_paths or [])]
    env = os.environ.get("MRINODE_MODELS_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(Path(__file__).resolve().parent / "bundles")
    return dirs


def read_card(folder: str | Path) -> Card:
    """Read and check a native bundle's card (the weights are neither read nor hashed).

    Parameters
    ----------
    folder : str or Path
        The bundle folder.

    Returns
    -------
    Card

    Raises
    ------
    BundleError
        No card, invalid JSON, or a malformed key (named).
    """
    return _read_card(Path(folder))


def _read_card(folder: Path) -> Card:
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise BundleError(f"bundle folder {folder} has no {CARD_FILE}.")
    try:
        data = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle card {card_path} is not valid JSON ({exc}).") from None
    return Card.from_dict(data, where=f"bundle card {card_path}")


def list_bundles(search_paths: list[str | Path] | None = None) -> list[Bundle]:
    """List the bundles found (cards read, weights not checked).

    Parameters
    ----------
    search_paths : list of str or Path, optional
        Extra folders, see :func:`bundle_dirs`.

    Returns
    -------
    list of Bundle
        First occurrence of each name wins.
    """
    found: dict[str, Bundle] = {}
    for root in bundle_dirs(search_paths):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if (folder / CARD_FILE).is_file():
                try:
                    card = _read_card(folder)
                except BundleError:
                    continue
                found.setdefault(card.name, Bundle(folder, card))
    return list(found.values())


def load_bundle(path_or_name: str | Path, search_paths: list[str | Path] | None = None) -> Bundle:
    """Load a bundle by folder path or by name, checking the weights' SHA-256.

    Parameters
    ----------
    path_or_name : str or Path
        A bundle folder, or a name looked up in :func:`bundle_dirs`.
    search_paths : list of str or Path, optional
        Extra folders for name look-up.

    Returns
    -------
    Bundle
        The bundle.

    Raises
    ------
    BundleError
        If no bundle has that name (with a did-you-mean hint), a file is missing, or the
        weights' SHA-256 differs from the card's.
    """
    candidate = Path(path_or_name)
    if candidate.is_dir():
        folder = candidate
    else:
        name = str(path_or_name)
        folder_opt = next((b.path for b in list_bundles(search_paths) if b.name == name), None)
        if folder_opt is None:
            for root in bundle_dirs(search_paths):
                if (root / name / CARD_FILE).is_file():
                    folder_opt = root / name
                    break
        if folder_opt is None:
            names = [b.name for b in list_bundles(search_paths)]
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            listed = ", ".join(names) or "none"
            raise BundleError(f"no model bundle named {name!r} is installed (installed: {listed}).{hint}")
        folder = folder_opt
    card = _read_card(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"bundle {card.name!r} in {folder} has no {WEIGHTS_FILE}.")
    actual = sha256_file(weights)
    if actual != card.weights_sha256:
        raise BundleError(
            f"bundle {card.name!r} in {folder} is refused: its weights' SHA-256 is {actual[:12]}… but its card "
            f"says {card.weights_sha256[:12] or '(none)'}…, so card and weights do not belong together."
        )
    return Bundle(folder, card)


def save_bundle(folder: str | Path, card: Card, state_dict: dict[str, Any], half: bool = False) -> Bundle:
    """Write a bundle: weights, then the card with their SHA-256.

    Parameters
    ----------
    folder : str or Path
        The bundle folder (created if missing).
    card : Card
        The card; its ``weights_sha256`` is set here.
    state_dict : dict
        The network's state dict.
    half : bool
        Store floating-point tensors as float16 (halves the size; loading casts back).

    Returns
    -------
    Bundle
        The written bundle (loaded back through :func:`load_bundle`).
    """
    import torch
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in state_dict.items():
        t = v.detach().cpu().contiguous()
        if half and t.is_floating_point():
            t = t.to(torch.float16)
        tensors[k] = t
    save_file(tensors, str(out / WEIGHTS_FILE))
    card.weights_sha256 = sha256_file(out / WEIGHTS_FILE)
    (out / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    return load_bundle(out)
