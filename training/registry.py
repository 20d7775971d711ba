"""A file-system model registry: every trained bundle kept by version, one promoted per name.

Layout of a registry folder::

    <root>/registry.json                 index: versions per model name, which is promoted
    <root>/<name>/<version>/card.json    the bundle as exported by fine-tuning
    <root>/<name>/<version>/weights.safetensors

The node serves the promoted version of a name (``current_bundle``); older versions stay
for audit and rollback (``promote`` an older version to roll back).
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

__all__ = ["ModelRegistry", "RegistryEntry", "RegistryError"]

INDEX_NAME = "registry.json"


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

    def promote(self, name: str, version: str) -> RegistryEntry:
        """Make ``version`` the promoted version of ``name``.

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
        self._save(data)
        promoted = self.promoted(name)
        assert promoted is not None
        return promoted
