"""The model registry for training: every trained bundle kept by version, one promoted per name.

The registry itself lives with the models (:mod:`models.versions`), because the node rolls
back with it (``mrinode models rollback``) and the node never imports ``training``; this
module is its name on the training side.
"""

from __future__ import annotations

from models.versions import ModelRegistry, RegistryEntry, RegistryError

__all__ = ["ModelRegistry", "RegistryEntry", "RegistryError"]
