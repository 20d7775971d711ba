"""The script Orthanc's Python plugin loads (``"PythonScript"``): routes studies to mrinode.

Configuration, in Orthanc's own configuration file::

    "Plugins": ["/usr/share/orthanc/plugins/libOrthancPython.so", ...],
    "PythonScript": "/opt/mrinode/plugin/mrinode_plugin.py",
    "UserMetadata": {"MrinodeStatus": 4401},
    "Mrinode": {
      "RulesFile": "/etc/orthanc/mrinode-rules.toml",   // routing rules (TOML or JSON)
      "StateFile": "/var/lib/orthanc/mrinode-state.json", // what was sent when
      "StatusMetadata": "MrinodeStatus",  // study metadata set to routed / send-failed / results
      "Workers": 2,              // studies handled at the same time
      "StoreTimeout": 600,       // seconds one C-STORE job to a node may take
      "StoreAttempts": 3,        // C-STORE attempts before a send is recorded as failed
      "RetryDelay": 5,           // seconds before the second attempt (doubles)
      "KeepDays": 30,            // forget what was sent to a study after this many days
      "QuietPeriod": 0           // seconds: route a study this long after its last instance,
                                 // ahead of StableAge (0 = off: StableAge only; see plugin/quiet.py)
    }

Relative paths are read from the folder of Orthanc's configuration file. Orthanc 1.10
has no study labels (they arrived in 1.12), hence the user-defined metadata.

REST routes (behind Orthanc's own authentication):

- ``GET /mrinode/rules``: the nodes and rules in force and the errors found in the file.
- ``POST /mrinode/rules/reload``: read the rules file again.
- ``GET /mrinode/decisions[?limit=N]``: recent routing decisions.
- ``GET /mrinode/studies/{id}``: decisions and sends for one Orthanc study, and the
  node's jobs for it (proxied from the node's REST API).
- ``POST /mrinode/studies/{id}/route``: evaluate the study again now (body ``{"force": true}``:
  send every chosen instance again).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import orthanc

# Orthanc puts this script's folder on sys.path; the engine is the ``plugin`` package
# one level up (the repository root, or wherever the package is installed).
_PARENT = str(Path(__file__).resolve().parent.parent)
if _PARENT not in sys.path:
    sys.path.insert(0, _PARENT)

from plugin.node_client import NodeError, node_jobs  # noqa: E402
from plugin.quiet import QuietTimer, parse_quiet_period  # noqa: E402
from plugin.router import Router  # noqa: E402
from plugin.rules import RuleSet, load_rules  # noqa: E402
from plugin.state import RoutingState  # noqa: E402

__all__ = ["OrthancRest", "install"]


class OrthancRest:
    """:class:`plugin.router.OrthancApi` on top of the in-process ``orthanc`` module."""

    def get(self, uri: str) -> Any:
        """GET and decode JSON; ``None`` when Orthanc has no such resource."""
        try:
            return json.loads(orthanc.RestApiGet(uri))
        except orthanc.OrthancException as exc:
            if _is_missing(exc):
                return None
            raise RuntimeError(f"GET {uri}: {exc}") from None

    def get_text(self, uri: str) -> str | None:
        """GET as text; ``None`` when Orthanc has no such resource."""
        try:
            raw = orthanc.RestApiGet(uri)
        except orthanc.OrthancException as exc:
            if _is_missing(exc):
                return None
            raise RuntimeError(f"GET {uri}: {exc}") from None
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    def post(self, uri: str, body: Any) -> Any:
        """POST JSON and decode the JSON answer."""
        try:
            raw = orthanc.RestApiPost(uri, json.dumps(body))
        except orthanc.OrthancException as exc:
            raise RuntimeError(f"POST {uri}: {exc}") from None
        return json.loads(raw) if raw else None

    def put_text(self, uri: str, text: str) -> None:
        """PUT a text body."""
        try:
            orthanc.RestApiPut(uri, text)
        except orthanc.OrthancException as exc:
            raise RuntimeError(f"PUT {uri}: {exc}") from None

    def log(self, level: str, message: str) -> None:
        """One line in Orthanc's log."""
        {"error": orthanc.LogError, "warning": orthanc.LogWarning}.get(level, orthanc.LogInfo)(message)


def _is_missing(exc: Exception) -> bool:
    # Orthanc error codes 7 (InexistentItem) and 17 (UnknownResource) mean "not there".
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    return (bool(args) and args[0] in (7, 17)) or "Unknown resource" in str(exc)


def _force(request: dict[str, Any]) -> bool:
    """``force`` from the query string or a JSON body ``{"force": true}`` (Orthanc passes
    query arguments of POST requests to plugins only in some versions)."""
    if str((request.get("get") or {}).get("force", "")).lower() in ("1", "true", "yes"):
        return True
    body = request.get("body") or b""
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("force") is True


def _answer(output: Any, payload: Any, status: int = 200) -> None:
    body = json.dumps(payload, indent=2, default=str)
    if status == 200:
        output.AnswerBuffer(body, "application/json")
    else:
        output.SendHttpStatus(status, body)


class _Plugin:
    """Holds the configuration, the rules, the state and the router."""

    def __init__(self) -> None:
        self.api = OrthancRest()
        cfg_path = orthanc.GetConfigurationPath() if hasattr(orthanc, "GetConfigurationPath") else ""
        base = Path(cfg_path) if cfg_path else Path.cwd()
        self.base = base if base.is_dir() else base.parent
        full = json.loads(orthanc.GetConfiguration())
        self.config: dict[str, Any] = full.get("Mrinode", {}) or {}
        self.rules_file = self._path(self.config.get("RulesFile", "mrinode-rules.toml"))
        state_file = self.config.get("StateFile")
        self.state = RoutingState(self._path(state_file) if state_file else None)
        if self.state.load_error:
            orthanc.LogError(f"mrinode: {self.state.load_error}")
        status = self.config.get("StatusMetadata", "MrinodeStatus")
        if status and status not in (full.get("UserMetadata") or {}):
            orthanc.LogError(
                f"mrinode: study metadata {status!r} is not declared in UserMetadata; "
                "results will not be marked on studies (add it, e.g. \"UserMetadata\": {\"MrinodeStatus\": 4401})."
            )
            status = None
        self.router = Router(
            self.api,
            self.load(),
            self.state,
            status_metadata=status,
            workers=int(self.config.get("Workers", 2)),
            store_timeout_s=float(self.config.get("StoreTimeout", 600)),
            attempts=int(self.config.get("StoreAttempts", 3)),
            retry_delay_s=float(self.config.get("RetryDelay", 5)),
            keep_days=float(self.config.get("KeepDays", 30)),
        )
        quiet_s, error = parse_quiet_period(self.config.get("QuietPeriod"))
        if error:
            orthanc.LogError(f"mrinode: {error}")
        self.quiet = QuietTimer(self.api, self.router.submit, quiet_s) if quiet_s > 0 else None

    def _path(self, value: str) -> Path:
        path = Path(os.path.expanduser(str(value)))
        return path if path.is_absolute() else self.base / path

    def load(self) -> RuleSet:
        """Read the rules file and log what was found (one line per bad rule)."""
        rules = load_rules(self.rules_file)
        for error in rules.errors:
            orthanc.LogError(f"mrinode: bad routing rule: {error}")
        orthanc.LogWarning(
            f"mrinode: {len(rules.rules)} routing rule(s) to {len(rules.nodes)} node(s) loaded from "
            f"{self.rules_file}" + (f", {len(rules.errors)} error(s)" if rules.errors else "")
        )
        return rules

    # ------------------------------------------------------------ callbacks
    def on_change(self, change_type: int, level: int, resource_id: str) -> None:
        """Orthanc's change callback: queue stable (or quiet) studies, forget deleted ones."""
        if change_type == orthanc.ChangeType.NEW_INSTANCE:
            if self.quiet is not None:
                self.quiet.instance_stored(resource_id)
        elif change_type == orthanc.ChangeType.STABLE_STUDY:
            if self.quiet is None or not self.quiet.already_routed(resource_id):
                self.router.submit(resource_id)
        elif change_type == orthanc.ChangeType.DELETED and level == orthanc.ResourceType.STUDY:
            self.state.forget(resource_id)
        elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
            if self.quiet is not None:
                self.quiet.stop()
            self.router.stop()

    def rest_rules(self, output: Any, uri: str, **request: Any) -> None:
        """``GET /mrinode/rules``."""
        if request.get("method") != "GET":
            output.SendMethodNotAllowed("GET")
            return
        _answer(output, self.router.rules.public())

    def rest_reload(self, output: Any, uri: str, **request: Any) -> None:
        """``POST /mrinode/rules/reload``."""
        if request.get("method") != "POST":
            output.SendMethodNotAllowed("POST")
            return
        self.router.rules = self.load()
        _answer(output, self.router.rules.public())

    def rest_decisions(self, output: Any, uri: str, **request: Any) -> None:
        """``GET /mrinode/decisions``."""
        if request.get("method") != "GET":
            output.SendMethodNotAllowed("GET")
            return
        try:
            limit = int(request.get("get", {}).get("limit", 100))
        except ValueError:
            _answer(output, {"error": "limit must be an integer"}, 400)
            return
        _answer(output, self.state.decisions(limit=limit))

    def rest_study(self, output: Any, uri: str, **request: Any) -> None:
        """``GET /mrinode/studies/{id}`` and ``POST /mrinode/studies/{id}/route``."""
        groups: tuple[Any, ...] = tuple(request.get("groups") or ())
        study_id, action = groups[0], (groups[1] if len(groups) > 1 else None)
        if action:
            if request.get("method") != "POST":
                output.SendMethodNotAllowed("POST")
                return
            _answer(output, self.router.evaluate(study_id, force=_force(request)))
            return
        if request.get("method") != "GET":
            output.SendMethodNotAllowed("GET")
            return
        info = self.api.get(f"/studies/{study_id}")
        if info is None:
            _answer(output, {"error": f"Orthanc has no study {study_id!r}."}, 404)
            return
        study_uid = info.get("MainDicomTags", {}).get("StudyInstanceUID", "")
        known = self.state.study(study_id)
        jobs: dict[str, Any] = {}
        for send in known.get("sends", []):
            node = self.router.rules.nodes.get(send.get("node", ""))
            if node is None or node.name in jobs:
                continue
            try:
                jobs[node.name] = node_jobs(node, study_uid)
            except NodeError as exc:
                jobs[node.name] = {"error": str(exc)}
        _answer(
            output,
            {
                "study_id": study_id,
                "study_uid": study_uid,
                "status": known.get("status", ""),
                "state": known,
                "decisions": self.state.decisions(study_id),
                "node_jobs": jobs,
            },
        )


def install() -> _Plugin:
    """Create the plugin, register its callbacks and routes, start its workers."""
    plugin = _Plugin()
    orthanc.RegisterOnChangeCallback(plugin.on_change)
    orthanc.RegisterRestCallback("/mrinode/rules", plugin.rest_rules)
    orthanc.RegisterRestCallback("/mrinode/rules/reload", plugin.rest_reload)
    orthanc.RegisterRestCallback("/mrinode/decisions", plugin.rest_decisions)
    orthanc.RegisterRestCallback("/mrinode/studies/([^/]+)(?:/(route))?", plugin.rest_study)
    plugin.router.start()
    if plugin.quiet is not None:
        plugin.quiet.start()
        orthanc.LogWarning(f"mrinode: studies are routed {plugin.quiet.quiet_s:g} s after their last instance "
                           "(QuietPeriod), or when Orthanc reports them stable.")
    return plugin


# Orthanc imports this file once at start-up; registering is what loading it means.
_PLUGIN = install()
