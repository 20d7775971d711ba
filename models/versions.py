"""A file-system model registry: every trained bundle kept by version, one promoted and served per name.

Layout of a registry folder::

    <root>/registry.json                 index: versions per model name, which is promoted
    <root>/<name>/<version>/card.json    the bundle as exported by fine-tuning
    <root>/<name>/<version>/weights.safetensors

    <root>/serving/<name> -> ../<name>/<version>   the promoted version (a symbolic link)

The node serves the promoted version of a name: point a pipeline's ``options.model`` at
``<root>/serving/<name>`` (or ``options.models_dir`` at ``<root>/serving``). Promotion
replaces that link atomically (``os.replace`` of a new link), so a warm worker finds the new
card and weights for its next job and loads them (:func:`models.registry.load_model` caches
by folder and weights SHA-256) without a restart. Every registered copy's card carries the
registry version, so the node's SR names the version it ran. Older versions stay for audit;
:meth:`ModelRegistry.rollback` promotes the version promoted before the current one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["LAST_RUN", "SERVING_DIR", "ModelRegistry", "RegistryEntry", "RegistryError", "registry_root"]

INDEX_NAME = "registry.json"
SERVING_DIR = "serving"
#: The last retraining run's record, beside the index (written by ``training.retrain``, read by ``/metrics``).
LAST_RUN = "retrain-last.json"


def registry_root(model_ref: str | Path) -> Path | None:
    """The registry a served model folder belongs to (``<root>/serving/<name>``), else None."""
    p = Path(model_ref)
    root = p.parent.parent
    return root if p.parent.name == SERVING_DIR and (root / INDEX_NAME).is_file() else None


class RegistryError(ValueError):
    """A registry operation that cannot be done, with a sentence saying why."""


@dataclass
class RegistryEntry:
    """One registered bundle version.

    Attributes
    ----------
    name : str
        The bundle name from its card.
    version : str
        The registry version (``"<card version>+<UTC timestamp>"``).
    path : str
        The bundle folder, relative to the registry root.
    metrics : dict
        The card's metrics at registration.
    registered_at : str
        ISO-8601 UTC time of registration.
    note : str
        Free text (for example why it was or was not promoted).
    """

    name: str
    version: str
    path: str
    metrics: dict[str, Any] = field(default_factory=dict)
    registered_at: str = ""
    note: str = ""


class ModelRegistry:
    """Versions of model bundles under one folder, with one promoted version per name.

    Parameters
    ----------
    root : Path
        The registry folder; created when missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- index -----------------------------------------------------------------------------
    def _index_path(self) -> Path:
        return self.root / INDEX_NAME

    def _load(self) -> dict[str, Any]:
        path = self._index_path()
        if not path.exists():
            return {"models": {}}
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RegistryError(f"the registry index {path} is not valid JSON ({exc}).") from exc
        data.setdefault("models", {})
        return data

    def _save(self, data: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".registry-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._index_path())

    # -- queries ---------------------------------------------------------------------------
    def versions(self, name: str) -> list[RegistryEntry]:
        """Return every registered version of ``name``, oldest first.

        Parameters
        ----------
        name : str
            A bundle name.

        Returns
        -------
        list of RegistryEntry
            The versions; empty when the name is unknown.
        """
        model = self._load()["models"].get(name, {})
        return [RegistryEntry(**entry) for entry in model.get("versions", [])]

    def promoted(self, name: str) -> RegistryEntry | None:
        """Return the promoted version of ``name``, or ``None``."""
        model = self._load()["models"].get(name, {})
        version = model.get("promoted")
        for entry in self.versions(name):
            if entry.version == version:
                return entry
        return None

    def current_bundle(self, name: str) -> Path | None:
        """Return the folder of the promoted bundle of ``name``, or ``None``."""
        entry = self.promoted(name)
        return None if entry is None else self.root / entry.path

    def serving_path(self, name: str) -> Path:
        """The stable folder the node serves ``name`` from (a link to the promoted version)."""
        return self.root / SERVING_DIR / name

    def history(self, name: str) -> list[dict[str, str]]:
        """Promotions of ``name``, oldest first: ``{"version", "at", "why"}``."""
        model = self._load()["models"].get(name, {})
        return [dict(h) for h in model.get("history", [])]

    # -- changes ---------------------------------------------------------------------------
    def register(
        self, bundle_dir: Path, *, note: str = "", metrics: dict[str, Any] | None = None
    ) -> RegistryEntry:
        """Copy a bundle folder into the registry as a new version.

        Parameters
        ----------
        bundle_dir : Path
            A folder with ``card.json`` and ``weights.safetensors``.
        note : str
            Free text stored with the entry.
        metrics : dict, optional
            The metrics to record (for example the run's validation metrics); the card's
            ``metrics`` when omitted.

        Returns
        -------
        RegistryEntry
            The new entry (not promoted).

        Raises
        ------
        RegistryError
            If the folder is not a bundle.
        """
        bundle_dir = Path(bundle_dir)
        card_path = bundle_dir / "card.json"
        if not card_path.is_file() or not (bundle_dir / "weights.safetensors").is_file():
            raise RegistryError(
                f"{bundle_dir} is not a model bundle: it needs card.json and weights.safetensors."
            )
        card = json.loads(card_path.read_text())
        name = str(card.get("name") or "").strip()
        if not name:
            raise RegistryError(f"{card_path} has no 'name'; a registry entry needs one.")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        version = f"{card.get('version', '0')}+{stamp}"
        rel = Path(name) / version
        shutil.copytree(bundle_dir, self.root / rel)
        card["version"] = version  # the node's SR names the registry version it ran
        copied = self.root / rel / "card.json"
        copied.write_text(json.dumps(card, indent=2) + "\n")
        entry = RegistryEntry(
            name=name,
            version=version,
            path=str(rel),
            metrics=dict(metrics if metrics is not None else card.get("metrics") or {}),
            registered_at=datetime.now(UTC).isoformat(timespec="seconds"),
            note=note,
        )
        data = self._load()
        model = data["models"].setdefault(name, {"versions": [], "promoted": None})
        model["versions"].append(asdict(entry))
        self._save(data)
        return entry

    def promote(self, name: str, version: str, *, why: str = "promoted") -> RegistryEntry:
        """Make ``version`` the promoted version of ``name`` and serve it.

        The index records the promotion (for :meth:`rollback`), then the serving link
        ``<root>/serving/<name>`` is replaced atomically.

        Parameters
        ----------
        name, version : str
            A registered version.
        why : str
            Recorded with the promotion.

        Raises
        ------
        RegistryError
            If the name or version is not registered.
        """
        data = self._load()
        model = data["models"].get(name)
        if model is None:
            raise RegistryError(f"model {name!r} is not in the registry at {self.root}.")
        known = [entry["version"] for entry in model["versions"]]
        if version not in known:
            raise RegistryError(f"model {name!r} has no version {version!r}; registered: {', '.join(known)}.")
        model["promoted"] = version
        model.setdefault("history", []).append(
            {"version": version, "at": datetime.now(UTC).isoformat(timespec="seconds"), "why": why})
        self._save(data)
        promoted = self.promoted(name)
        assert promoted is not None
        self._serve(name, promoted)
        return promoted

    def rollback(self, name: str) -> RegistryEntry:
        """Promote again the version that was promoted before the current one.

        Returns
        -------
        RegistryEntry
            The version now promoted.

        Raises
        ------
        RegistryError
            If ``name`` is unknown or has had no earlier promoted version.
        """
        current = self.promoted(name)
        if current is None:
            raise RegistryError(f"model {name!r} has no promoted version in the registry at {self.root}.")
        earlier = [h["version"] for h in self.history(name) if h["version"] != current.version]
        if not earlier:
            raise RegistryError(f"model {name!r} has no earlier promoted version to roll back to "
                                f"(promoted: {current.version}).")
        return self.promote(name, earlier[-1], why=f"rollback from {current.version}")

    def _serve(self, name: str, entry: RegistryEntry) -> None:
        link = self.serving_path(name)
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(self.root / entry.path, link.parent)
        tmp = link.parent / f".{name}.{os.getpid()}.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp, target_is_directory=True)
        if link.exists() and not link.is_symlink():
            raise RegistryError(f"{link} is a folder, not the registry's serving link; move it away first.")
        os.replace(tmp, link)
