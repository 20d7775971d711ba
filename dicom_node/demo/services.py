"""Start and stop the demo's long-running processes: Orthanc, the node, the forwarder.

Each process has a pid file and a log under the demo folder (default ``./var/demo``) and
runs in its own session, so it outlives ``make demo`` until ``make demo-stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SERVICES",
    "DemoPaths",
    "render_node_config",
    "render_orthanc_config",
    "start_process",
    "stop_all",
    "strip_json_comments",
]

#: Stop order: the forwarder first, then the viewer, the node, then Orthanc.
SERVICES: tuple[str, ...] = ("forward", "viewer", "node", "orthanc")


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo's files live.

    Attributes
    ----------
    root : Path
        The repository root (deploy/ and plugin/ are read from there).
    var : Path
        The demo's folder for data, logs and pid files.
    """

    root: Path
    var: Path

    def pid(self, name: str) -> Path:
        """The pid file of a service."""
        return self.var / f"{name}.pid"

    def log(self, name: str) -> Path:
        """The log file of a service."""
        return self.var / f"{name}.log"


def strip_json_comments(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments (outside strings), as Orthanc's reader does."""
    out: list[str] = []
    i, n, in_str = 0, len(text), False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _remap(value: str, paths: DemoPaths) -> str:
    if value.startswith("var/demo/"):
        return str(paths.var / value[len("var/demo/") :])
    return str(value if Path(value).is_absolute() else paths.root / value)


def render_orthanc_config(paths: DemoPaths, template: Path | None = None) -> Path:
    """Write ``<var>/orthanc.json`` from ``deploy/demo/orthanc.json`` with absolute paths.

    Returns
    -------
    Path
        The written configuration.
    """
    template = template or paths.root / "deploy" / "demo" / "orthanc.json"
    cfg: dict[str, Any] = json.loads(strip_json_comments(template.read_text()))
    for key in ("StorageDirectory", "IndexDirectory", "PythonScript"):
        if key in cfg:
            cfg[key] = _remap(cfg[key], paths)
    plugin_cfg = dict(cfg.get("Mrinode", {}))
    for key in ("RulesFile", "StateFile"):
        if key in plugin_cfg:
            plugin_cfg[key] = _remap(plugin_cfg[key], paths)
    cfg["Mrinode"] = plugin_cfg
    out = paths.var / "orthanc.json"
    out.write_text(json.dumps(cfg, indent=2))
    return out


def render_node_config(paths: DemoPaths, template: Path | None = None) -> Path:
    """Write ``<var>/node.toml`` from ``deploy/demo/node.toml`` with the data folder under ``var``."""
    template = template or paths.root / "deploy" / "demo" / "node.toml"
    text = template.read_text()
    text, count = re.subn(
        r'^data_dir\s*=\s*".*"$', f'data_dir = "{paths.var / "node"}"', text, count=1, flags=re.MULTILINE
    )
    if count != 1:
        raise ValueError(f"{template}: no [node] data_dir line to point at the demo folder.")
    out = paths.var / "node.toml"
    out.write_text(text)
    return out


def start_process(paths: DemoPaths, name: str, argv: list[str], *, netns: str | None) -> int:
    """Start one service in the background with its pid file and log.

    Parameters
    ----------
    paths : DemoPaths
        The demo folders.
    name : str
        ``orthanc``, ``node`` or ``forward``.
    argv : list of str
        The command.
    netns : str, optional
        Run it inside this network namespace (``ip netns exec`` execs the command, so the
        pid is the service's own).

    Returns
    -------
    int
        The process id.
    """
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    env["MPLBACKEND"] = "Agg"
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(paths.log(name), "ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=paths.root, env=env, start_new_session=True,
        )
    paths.pid(name).write_text(str(proc.pid))
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process still "exists"; reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop_all(paths: DemoPaths, timeout: float = 20.0) -> list[str]:
    """Stop every service that has a pid file (SIGTERM, then SIGKILL); remove the pid files.

    Returns
    -------
    list of str
        One line per service, saying what was done.
    """
    lines: list[str] = []
    for name in SERVICES:
        pid_file = paths.pid(name)
        if not pid_file.exists():
            continue
        try:
            pid = int(pid_file.read_text().strip())
        except ValueError:
            pid_file.unlink(missing_ok=True)
            continue
        if not _alive(pid):
            lines.append(f"{name}: was not running (pid {pid})")
            pid_file.unlink(missing_ok=True)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            lines.append(f"{name}: killed (pid {pid}) after {timeout:.0f} s")
        else:
            lines.append(f"{name}: stopped (pid {pid})")
        pid_file.unlink(missing_ok=True)
    return lines
