"""Typed configuration files: strict pydantic models and one sentence per bad key.

Shared by the node configuration (:mod:`dicom_node.config`) and the offline training
configurations (fine-tuning, pretraining and each objective's ``[options]``,
retraining): every table is a :class:`StrictModel` (unknown keys refused) and a
:class:`pydantic.ValidationError` becomes sentences such as ``config key 'train.lr':
Input should be a valid number.`` or ``config key 'options.mask_ratoi': unknown key
(did you mean 'mask_ratio'?).`` (:func:`error_sentences`).

Union members tagged ``kind=...`` (see :data:`dicom_node.config_models.DestinationConfig`)
are left out of key names.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["TAG_PREFIX", "StrictModel", "did_you_mean", "error_sentences", "known_keys", "load_toml"]

#: Prefix of union tags (``kind=dicom``): a tag is not a key and is left out of messages.
TAG_PREFIX = "kind="


class StrictModel(BaseModel):
    """A configuration table: unknown keys are refused (with a did-you-mean)."""

    model_config = ConfigDict(extra="forbid")


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``known`` to ``key``, or ``""``."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _models_in(annotation: Any, tag: str | None) -> list[type[BaseModel]]:
    """The model classes an annotation may hold (through Optional, unions, lists, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        meta_tags = [getattr(m, "tag", None) for m in args[1:]]
        if tag is not None and any(isinstance(t, str) for t in meta_tags) and tag not in meta_tags:
            return []
        return _models_in(args[0], tag)
    if origin in (Union, types.UnionType):
        return [m for a in args for m in _models_in(a, tag)]
    if origin in (list, tuple, set, frozenset):
        return [m for a in args for m in _models_in(a, tag)]
    if origin is dict and len(args) == 2:
        return _models_in(args[1], tag)
    return []


def known_keys(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed in the table at ``loc`` (a pydantic error location) below ``root``."""
    models: list[type[BaseModel]] = [root]
    items = list(loc)
    i = 0
    while i < len(items):
        item = items[i]
        nxt = next((x for x in items[i + 1:] if not isinstance(x, int)), None)
        tag = nxt if isinstance(nxt, str) and nxt.startswith(TAG_PREFIX) else None
        if isinstance(item, int) or (isinstance(item, str) and item.startswith(TAG_PREFIX)):
            i += 1
            continue
        found: list[type[BaseModel]] = []
        for model in models:
            field = model.model_fields.get(str(item))
            if field is not None:
                found.extend(_models_in(field.annotation, tag))
        if not found:
            return []
        models = found
        i += 1
    keys: set[str] = set()
    for model in models:
        keys.update(model.model_fields)
    return sorted(keys)


def _key_name(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif not item.startswith((TAG_PREFIX, "function-")):
            parts.append(item)
    return ".".join(parts) or "(top level)"


def error_sentences(exc: ValidationError, root: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[str]:
    """One ``config key '...': ...`` sentence per error of ``exc`` (raised validating ``root``).

    Parameters
    ----------
    exc : ValidationError
        From ``root.model_validate``.
    root : type of BaseModel
        The model validated (to suggest the nearest known key for an unknown one).
    prefix : tuple of str
        Keys in front of every location (when ``root`` is one table of a larger file).

    Returns
    -------
    list of str
        The sentences, in pydantic's order.
    """
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ").rstrip(".")
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + did_you_mean(str(loc[-1]), known_keys(root, loc[:-1]))
        out.append(f"config key '{_key_name(prefix + loc)}': {msg}.")
    return out


def load_toml(path: Any, what: str) -> dict[str, Any]:
    """Read a TOML file, or raise :class:`ValueError` naming ``what`` and the file.

    Parameters
    ----------
    path : str or Path
        The file.
    what : str
        Its kind, for messages (``"pretraining config"``).

    Returns
    -------
    dict
        The parsed tables.
    """
    import tomllib
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} {p} does not exist.")
    try:
        data: dict[str, Any] = tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {p} cannot be read ({exc}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{what} {p} is not valid TOML ({exc}).") from None
    return data
