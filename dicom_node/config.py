"""The node configuration: one TOML file read into typed settings (pydantic v2).

:func:`load_config` is called once at the entry point (``mrinode serve``, ``mrinode
jobs``); nothing here is read at import time. Every key is documented in
``deploy/node.example.toml``. A bad key or value raises :class:`ConfigError` with one
sentence per problem naming the key, for example ``config key 'dicom.port': Input should
be less than or equal to 65535``.

Relative paths: ``node.data_dir`` is relative to the working directory the node is
started in; every other path (TLS files, token file, audit log) is relative to
``node.data_dir`` when it is the audit log and to the configuration file's folder
otherwise.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dicom_node.config_models import (
    AllowedCaller,
    ApiConfig,
    ConfigError,
    DestinationAuth,
    DestinationConfig,
    DicomConfig,
    ExportConfig,
    KeyedValueError,
    LoggingConfig,
    NodeConfig,
    NodeSection,
    PipelineConfig,
    RoutingConfig,
    TlsConfig,
    TrackerConfig,
    WorkersConfig,
)
from dicom_node.typed_config import TAG_PREFIX, did_you_mean, known_keys

__all__ = [
    "AllowedCaller",
    "ApiConfig",
    "ConfigError",
    "DestinationAuth",
    "DestinationConfig",
    "DicomConfig",
    "ExportConfig",
    "LoggingConfig",
    "NodeConfig",
    "NodeSection",
    "PipelineConfig",
    "RoutingConfig",
    "TlsConfig",
    "TrackerConfig",
    "WorkersConfig",
    "load_config",
    "parse_config",
]


def _key_of(loc: tuple[int | str, ...], data: Any) -> str:
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            name = None
            if isinstance(node, list) and 0 <= item < len(node) and isinstance(node[item], dict):
                name = node[item].get("name") or node[item].get("ae_title")
            parts[-1:] = [f"{parts[-1]}[{item}]" + (f" ({name})" if name else "")] if parts else [str(item)]
            node = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)


def _format_errors(exc: ValidationError, data: Any, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith(("function-", TAG_PREFIX))))
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "extra_forbidden":
            hint = did_you_mean(str(loc[-1]), known_keys(NodeConfig, tuple(err["loc"])[:-1])) if loc else ""
            msg = f"unknown key{hint} (not a setting; check the spelling against deploy/node.example.toml)"
        msg = msg.rstrip(".")
        cause = (err.get("ctx") or {}).get("error")
        key = _key_of(loc, data)
        if isinstance(cause, KeyedValueError):  # a check across keys names the one at fault
            key = ".".join(x for x in (key if loc else "", cause.key) if x)
        lines.append(f"config key '{key}': {msg}.")
    return f"{source}: " + " ".join(lines)


def _resolve_paths(cfg: NodeConfig, base: Path) -> NodeConfig:
    def rel(p: Path | None) -> Path | None:
        if p is None or p.is_absolute():
            return p
        return base / p

    tls = cfg.dicom.tls.model_copy(update={"cert": rel(cfg.dicom.tls.cert), "key": rel(cfg.dicom.tls.key), "ca": rel(cfg.dicom.tls.ca)})
    dicom = cfg.dicom.model_copy(update={"tls": tls})
    api = cfg.api.model_copy(update={"token_file": rel(cfg.api.token_file)})
    node = cfg.node.model_copy(update={"data_dir": cfg.node.data_dir.expanduser().absolute()})
    return cfg.model_copy(update={"dicom": dicom, "api": api, "node": node})


def parse_config(data: dict[str, Any], *, source: str = "configuration", base_dir: Path | None = None) -> NodeConfig:
    """Validate a configuration mapping.

    Parameters
    ----------
    data : dict
        The parsed TOML.
    source : str
        Names the file in error messages.
    base_dir : Path, optional
        The folder relative TLS and token paths are resolved against (default: cwd).

    Returns
    -------
    NodeConfig
        The validated configuration, with ``node.data_dir`` made absolute.

    Raises
    ------
    ConfigError
        With a sentence per bad key.
    """
    try:
        cfg = NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, data, source)) from None
    return _resolve_paths(cfg, base_dir or Path.cwd())


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a node configuration file (TOML).

    Parameters
    ----------
    path : str or Path
        The TOML file.

    Returns
    -------
    NodeConfig
        The validated configuration.

    Raises
    ------
    ConfigError
        If the file is missing or unreadable, is not valid TOML, or has a bad key or
        value; the message names the file and the key.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {str(p)!r}: {exc.strerror or exc}.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc}).") from None
    return parse_config(data, source=str(p), base_dir=p.resolve().parent)
