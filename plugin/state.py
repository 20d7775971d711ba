"""What the plugin sent where and when, so that a study is re-sent only for new instances.

The state lives in one JSON file (written atomically: temp file, fsync, rename) so that
an Orthanc restart does not send every study again. It holds, per Orthanc study, the
instances already sent to each node, the history of sends, whether results came back,
and a bounded log of routing decisions for the ``/mrinode/`` REST routes.

Pure standard library; thread-safe (one lock around every read and write).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["RoutingState"]

_VERSION = 1


class RoutingState:
    """Per-study routing memory, optionally persisted to a JSON file.

    Parameters
    ----------
    path : Path, optional
        The JSON file; ``None`` keeps the state in memory only.
    max_decisions : int
        How many recent decisions to keep.
    """

    def __init__(self, path: str | Path | None = None, *, max_decisions: int = 500) -> None:
        self.path = Path(path) if path is not None else None
        self.max_decisions = max_decisions
        self._lock = threading.RLock()
        self._studies: dict[str, dict[str, Any]] = {}
        self._decisions: list[dict[str, Any]] = []
        self.load_error: str | None = None
        if self.path is not None and self.path.exists():
            self._load()

    # ---------------------------------------------------------------- storage
    def _load(self) -> None:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("version") != _VERSION:
                raise ValueError(f"unsupported state version {data.get('version') if isinstance(data, dict) else data!r}")
            self._studies = dict(data.get("studies", {}))
            self._decisions = list(data.get("decisions", []))[-self.max_decisions :]
        except (OSError, ValueError) as exc:
            # A damaged state file must not stop Orthanc: start empty, keep the old file aside.
            self.load_error = f"routing state file {str(self.path)!r} could not be read ({exc}); starting empty."
            self._studies, self._decisions = {}, []
            bad = self.path.with_suffix(self.path.suffix + ".bad")
            with contextlib.suppress(OSError):
                os.replace(self.path, bad)

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"version": _VERSION, "studies": self._studies, "decisions": self._decisions})
        fd, tmp = tempfile.mkstemp(prefix=".mrinode-state.", dir=str(self.path.parent))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _study(self, study_id: str) -> dict[str, Any]:
        entry = self._studies.get(study_id)
        if entry is None:
            entry = {"study_uid": "", "sent": {}, "sends": [], "results": [], "status": ""}
            self._studies[study_id] = entry
        return entry

    # ------------------------------------------------------------------ sends
    def unsent(self, study_id: str, node: str, instance_ids: Iterable[str]) -> list[str]:
        """The instances of ``instance_ids`` not yet sent to ``node`` (order kept).

        Parameters
        ----------
        study_id : str
            Orthanc's study identifier.
        node : str
            The node's name in the rules file.
        instance_ids : iterable of str
            The instances a rule chose.

        Returns
        -------
        list of str
            The ones never sent successfully to this node.
        """
        with self._lock:
            sent = set(self._studies.get(study_id, {}).get("sent", {}).get(node, []))
        return [i for i in instance_ids if i not in sent]

    def record_send(
        self,
        study_id: str,
        *,
        study_uid: str,
        node: str,
        rule: str,
        instance_ids: list[str],
        ok: bool,
        detail: str = "",
        started: float | None = None,
        finished: float | None = None,
    ) -> None:
        """Remember one send attempt; successful ones mark their instances as sent.

        Parameters
        ----------
        study_id, study_uid : str
            Orthanc's identifier and the Study Instance UID.
        node, rule : str
            Where it went and why.
        instance_ids : list of str
            What was sent.
        ok : bool
            Whether the C-STORE job succeeded.
        detail : str
            A sentence about the outcome (job id, node reply, error).
        started, finished : float, optional
            Unix times of the attempt (default: now).
        """
        now = time.time()
        with self._lock:
            entry = self._study(study_id)
            entry["study_uid"] = study_uid
            if ok:
                sent = entry["sent"].setdefault(node, [])
                known = set(sent)
                sent.extend(i for i in instance_ids if i not in known)
            entry["sends"].append(
                {
                    "node": node,
                    "rule": rule,
                    "instances": len(instance_ids),
                    "ok": ok,
                    "detail": detail,
                    "started": started if started is not None else now,
                    "finished": finished if finished is not None else now,
                }
            )
            entry["status"] = "routed" if ok else "send-failed"
            self._save()

    def record_results(self, study_id: str, series_ids: list[str]) -> bool:
        """Remember result series found in the study.

        Returns
        -------
        bool
            ``True`` when at least one of ``series_ids`` is new.
        """
        with self._lock:
            entry = self._study(study_id)
            known = set(entry["results"])
            new = [s for s in series_ids if s not in known]
            if not new:
                return False
            entry["results"].extend(new)
            entry["results_at"] = time.time()
            entry["status"] = "results"
            self._save()
            return True

    # -------------------------------------------------------------- decisions
    def record_decision(self, decision: dict[str, Any]) -> None:
        """Append one decision (a JSON-ready dict) to the bounded log."""
        with self._lock:
            item = dict(decision)
            item.setdefault("time", time.time())
            self._decisions.append(item)
            del self._decisions[: max(0, len(self._decisions) - self.max_decisions)]
            self._save()

    def decisions(self, study_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Recent decisions, newest last, optionally for one study."""
        with self._lock:
            items = [d for d in self._decisions if study_id is None or d.get("study_id") == study_id]
        return [dict(d) for d in items[-limit:]]

    def study(self, study_id: str) -> dict[str, Any]:
        """A JSON-ready copy of what is known about one study (``{}`` if nothing)."""
        with self._lock:
            entry = self._studies.get(study_id)
            if entry is None:
                return {}
            copy = json.loads(json.dumps(entry))
        copy["sent"] = {node: len(ids) for node, ids in copy["sent"].items()}
        return dict(copy)

    def prune(self, max_age_s: float, now: float | None = None) -> int:
        """Forget studies whose last send or result is older than ``max_age_s`` seconds.

        Keeps the state file small on a busy PACS; a forgotten study that gets new
        instances later is routed again as a whole.

        Returns
        -------
        int
            How many studies were forgotten.
        """
        now = time.time() if now is None else now
        with self._lock:
            old = [
                sid
                for sid, entry in self._studies.items()
                if max([s.get("finished", 0.0) for s in entry.get("sends", [])] + [entry.get("results_at", 0.0)])
                < now - max_age_s
            ]
            for sid in old:
                del self._studies[sid]
            if old:
                self._save()
        return len(old)

    def forget(self, study_id: str) -> None:
        """Drop a study (when Orthanc deletes it), so a re-import routes again."""
        with self._lock:
            if self._studies.pop(study_id, None) is not None:
                self._save()
