"""One registry for every model kind: native bundles and MONAI Bundles, loaded warm.

Two bundle formats are recognised by their files:

``native``
    ``card.json`` + ``weights.safetensors`` (:mod:`models.bundle`), run by
    :class:`models.engine.InferenceEngine`.
``monai``
    The MONAI Model Zoo layout, ``configs/metadata.json`` + ``configs/inference.json`` +
    ``models/model.pt`` (or ``model.ts``) + the mrinode sidecar ``configs/mrinode.json``
    (:mod:`models.monai_bundle`).

:func:`load_model` returns a :class:`Model` for either, warm: a second call with the same
bundle files, device and overlap returns the same object without loading anything, and a
bundle whose weights change on disk (a new promoted version) is loaded again.
Versions, promotion and rollback of trained bundles: :class:`ModelRegistry`
(:mod:`models.versions`); the node serves a promoted version from its serving link.
:func:`drain_load_events` reports every load that actually happened (a cache miss), for the
``mrinode_model_loads_total{model,version}`` counter.
"""

from __future__ import annotations

import contextlib
import difflib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from models.bundle import CARD_FILE, BundleError, Card, bundle_dirs, list_bundles
from models.versions import ModelRegistry, RegistryEntry, RegistryError

if TYPE_CHECKING:
    import numpy as np

    from models.engine import InferenceEngine, Prediction

__all__ = [
    "BundleKind",
    "BundleRef",
    "LoadedModel",
    "Model",
    "ModelRegistry",
    "RegistryEntry",
    "RegistryError",
    "bundle_kind",
    "check_bundle",
    "drain_load_events",
    "find_bundle",
    "invalid_bundles",
    "list_models",
    "load_model",
    "set_cache_limit_mb",
    "warm_models",
]

BundleKind = Literal["native", "monai"]

#: A MONAI Bundle is recognised by this file.
MONAI_METADATA = "configs/metadata.json"


@runtime_checkable
class Model(Protocol):
    """What a pipeline needs from a model, whatever its bundle format."""

    @property
    def card(self) -> Card:
        """The model card (labels with codes and colours, sequences, preprocessing)."""
        ...

    @property
    def channels(self) -> list[str]:
        """The sequence label fed to each input channel."""
        ...

    def predict(
        self,
        images: Mapping[str, np.ndarray],
        affine: np.ndarray,
        affines: Mapping[str, np.ndarray] | None = None,
        shape: Sequence[int] | None = None,
    ) -> Prediction:
        """Segment a study's volumes (see :meth:`models.engine.InferenceEngine.predict`)."""
        ...


class LoadedModel:
    """A warm engine behind the :class:`Model` protocol.

    Attribute look-ups it does not define go to the engine (``device``, ``net``, ``prepare``,
    ``roi_size``…), so code written for :class:`models.engine.InferenceEngine` keeps working.

    Parameters
    ----------
    engine : InferenceEngine
        The engine (for a MONAI Bundle, one built on :class:`models.monai_bundle.MonaiBundle`).
    kind : {"native", "monai"}
        The bundle format.
    """

    def __init__(self, engine: InferenceEngine, kind: BundleKind) -> None:
        self.engine = engine
        self.kind: BundleKind = kind

    @property
    def card(self) -> Card:
        """The model card."""
        card: Card = self.engine.bundle.card
        return card

    @property
    def channels(self) -> list[str]:
        """The sequence label fed to each input channel."""
        return list(self.engine.channels)

    @property
    def path(self) -> Path:
        """The bundle folder."""
        return Path(self.engine.bundle.path)

    def predict(
        self,
        images: Mapping[str, np.ndarray],
        affine: np.ndarray,
        affines: Mapping[str, np.ndarray] | None = None,
        shape: Sequence[int] | None = None,
    ) -> Prediction:
        """Segment a study's volumes; see :meth:`models.engine.InferenceEngine.predict`."""
        return self.engine.predict(images, affine, affines, shape)

    def __getattr__(self, name: str) -> Any:
        if name == "engine":  # not yet set (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.engine, name)

    def __repr__(self) -> str:
        return f"LoadedModel({self.card.name!r} {self.card.version}, kind={self.kind}, device={self.engine.device})"


@dataclass(frozen=True)
class BundleRef:
    """A bundle found on disk (nothing loaded): its format, folder and card."""

    kind: BundleKind
    path: Path
    card: Card

    @property
    def name(self) -> str:
        """The card's name."""
        return self.card.name


_lock = threading.RLock()
_events: list[tuple[str, str]] = []


def _record(card: Card) -> None:
    with _lock:
        _events.append((card.name, card.version))


def drain_load_events() -> list[tuple[str, str]]:
    """Return ``(name, version)`` of every model loaded (cache miss) since the last call, and forget them.

    Process-wide and thread-safe; loads made through :func:`load_model` are counted, one
    event per load (a reload after a new version or after eviction counts again).
    """
    with _lock:
        out = list(_events)
        _events.clear()
    return out


def bundle_kind(folder: str | Path) -> BundleKind | None:
    """Return the format of a bundle folder, or None when it is neither."""
    p = Path(folder)
    if (p / CARD_FILE).is_file():
        return "native"
    if (p / MONAI_METADATA).is_file():
        return "monai"
    return None


def list_models(search_paths: list[str | Path] | None = None) -> list[BundleRef]:
    """List every bundle found, both formats (first occurrence of a name wins; weights not checked).

    Parameters
    ----------
    search_paths : list of str or Path, optional
        Extra folders, searched first (see :func:`models.bundle.bundle_dirs`).

    Returns
    -------
    list of BundleRef
        Native bundles and MONAI Bundles whose cards can be read; unreadable MONAI Bundles
        are left out here (:func:`check_bundle` says why).
    """
    from models.monai_bundle import read_card

    found: dict[str, BundleRef] = {}
    for b in list_bundles(search_paths):
        found.setdefault(b.name, BundleRef("native", b.path, b.card))
    for root in bundle_dirs(search_paths):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if bundle_kind(folder) != "monai":
                continue
            try:
                card = read_card(folder)
            except BundleError:
                continue
            found.setdefault(card.name, BundleRef("monai", folder, card))
    return list(found.values())


def invalid_bundles(search_paths: list[str | Path] | None = None) -> list[tuple[Path, str]]:
    """Folders in the bundle folders that look like a bundle (either format) but cannot be read, with why.

    Cheap (no network built, no torch import for MONAI Bundles; native weights are not hashed).

    Returns
    -------
    list of (Path, str)
        The folder and the sentence of its :class:`models.bundle.BundleError`.
    """
    from models.bundle import read_card as read_native_card
    from models.monai_bundle import read_card

    bad: list[tuple[Path, str]] = []
    for root in bundle_dirs(search_paths):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            kind = bundle_kind(folder)
            try:
                if kind == "native":
                    read_native_card(folder)
                elif kind == "monai":
                    read_card(folder)
            except (BundleError, KeyError, TypeError, ValueError) as exc:
                bad.append((folder, str(exc)))
    return bad


def find_bundle(name_or_path: str | Path, search_paths: list[str | Path] | None = None) -> tuple[BundleKind, Path]:
    """Find a bundle folder by path or name.

    Raises
    ------
    BundleError
        If the folder is no bundle, or no bundle has that name (with a did-you-mean hint).
    """
    candidate = Path(name_or_path)
    if candidate.is_dir():
        kind = bundle_kind(candidate)
        if kind is None:
            raise BundleError(f"folder {candidate} is no model bundle: it has neither {CARD_FILE} (native) nor "
                              f"{MONAI_METADATA} (MONAI Bundle).")
        return kind, candidate
    name = str(name_or_path)
    refs = list_models(search_paths)
    for ref in refs:
        if ref.name == name:
            return ref.kind, ref.path
    for root in bundle_dirs(search_paths):  # a folder of that name whose card cannot be read: say why on load
        kind = bundle_kind(root / name)
        if kind is not None:
            return kind, root / name
    names = [r.name for r in refs]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise BundleError(f"no model bundle named {name!r} is installed (installed: {', '.join(names) or 'none'}).{hint}")


def check_bundle(name_or_path: str | Path, search_paths: list[str | Path] | None = None) -> None:
    """Check a bundle's files without building its network (cheap; no torch import for MONAI Bundles).

    Native bundles: card readable, weights present with the card's SHA-256. MONAI Bundles:
    :func:`models.monai_bundle.check_bundle` (files, JSON, sidecar keys, sequence labels).

    Raises
    ------
    BundleError
        With a sentence naming the file and key at fault.
    """
    kind, folder = find_bundle(name_or_path, search_paths)
    if kind == "native":
        from models.bundle import load_bundle

        load_bundle(folder)
    else:
        from models.monai_bundle import check_bundle as check_monai

        check_monai(folder)


def _wrap(engine: InferenceEngine, kind: BundleKind) -> LoadedModel:
    # One wrapper per warm engine (kept on the engine, so it goes when the engine's cache
    # evicts it): load_model(x) is load_model(x) while x stays warm.
    model = getattr(engine, "_registry_model", None)
    if not isinstance(model, LoadedModel):
        model = LoadedModel(engine, kind)
        engine._registry_model = model  # type: ignore[attr-defined]
    return model


#: Bytes the warm models of this process may hold (parameters and buffers); 0 = no limit.
_cache_limit_bytes = 0
#: Warm models by engine identity, least recently used first: (engine, kind, parameter bytes).
_warm: OrderedDict[int, tuple[Any, BundleKind, int]] = OrderedDict()
#: Native engines by (folder, weights SHA-256, device, overlap), least recently used first.
_native: OrderedDict[tuple[str, str, str, float | None], Any] = OrderedDict()
_MAX_NATIVE = 4


def set_cache_limit_mb(mb: float) -> None:
    """Bound the memory of this process's warm models (``[workers] model_cache_mb``).

    When a model is loaded or used and the warm ones together hold more parameter and buffer
    bytes than this, the least recently used others are dropped from the caches (the one in
    use always stays, even alone above the limit); a dropped model is loaded again, and
    counted again, when next used.

    Parameters
    ----------
    mb : float
        The limit in MiB; 0 for none.
    """
    global _cache_limit_bytes
    with _lock:
        _cache_limit_bytes = max(0, int(mb * 2**20))


def warm_models() -> list[tuple[str, str, int]]:
    """(name, version, parameter bytes) of the warm models the registry holds, least recently used first."""
    with _lock:
        return [(e.bundle.card.name, e.bundle.card.version, n) for e, _, n in _warm.values()]


def _model_bytes(engine: Any) -> int:
    net = getattr(engine, "net", None)
    if net is None or not hasattr(net, "parameters"):
        return 0
    tensors = [*net.parameters(), *net.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def _drop(engine: Any, kind: BundleKind) -> None:
    cache: Any
    lock: Any
    if kind == "native":
        cache, lock = _native, contextlib.nullcontext()
    else:
        from models import monai_bundle

        cache, lock = monai_bundle._engines, monai_bundle._engines_lock
    with lock:
        for key, eng in list(cache.items()):
            if eng is engine:
                del cache[key]


def _touch(engine: Any, kind: BundleKind) -> None:
    """Mark ``engine`` most recently used and drop least recently used others beyond the limit."""
    key = id(engine)
    entry = _warm.pop(key, None)
    _warm[key] = entry if entry is not None else (engine, kind, _model_bytes(engine))
    if not _cache_limit_bytes:
        return
    while sum(n for _, _, n in _warm.values()) > _cache_limit_bytes and len(_warm) > 1:
        old_key = next(iter(_warm))
        old, old_kind, _ = _warm.pop(old_key)
        _drop(old, old_kind)


def load_model(
    name_or_path: str | Path,
    device: str = "auto",
    search_paths: list[str | Path] | None = None,
    overlap: float | None = None,
) -> LoadedModel:
    """Return a warm model for a bundle of either format, loading it on first use.

    Parameters
    ----------
    name_or_path : str or Path
        A bundle folder, or a name (a native card's name; a MONAI Bundle's sidecar ``name``,
        else its folder name) looked up in :func:`models.bundle.bundle_dirs`.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    search_paths : list of str or Path, optional
        Extra bundle folders, searched first.
    overlap : float, optional
        Sliding-window overlap; the card's when omitted.

    Returns
    -------
    LoadedModel
        Satisfies :class:`Model`. Cached by bundle folder, weights SHA-256 (so a new
        version on disk is reloaded), device and overlap.

    Raises
    ------
    BundleError
        If the bundle cannot be found or is invalid (a sentence naming the file and key).
    """
    kind, folder = find_bundle(name_or_path, search_paths)
    with _lock:
        if kind == "native":
            from models import engine as engine_mod
            from models.bundle import load_bundle

            bundle = load_bundle(folder)
            key = (str(bundle.path.resolve()), bundle.card.weights_sha256, engine_mod.resolve_device(device), overlap)
            eng = _native.pop(key, None)
            if eng is None:
                eng = engine_mod.InferenceEngine(bundle, device=key[2], overlap=overlap)
                _record(eng.bundle.card)
                while len(_native) >= _MAX_NATIVE:
                    old = _native.popitem(last=False)[1]
                    _warm.pop(id(old), None)
            _native[key] = eng
            _touch(eng, "native")
            return _wrap(eng, "native")
        from models import monai_bundle

        eng, loaded = monai_bundle.get_engine(folder, device=device, overlap=overlap)
        if loaded:
            _record(eng.bundle.card)
        _touch(eng, "monai")
        return _wrap(eng, "monai")
