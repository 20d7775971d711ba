"""The routing engine: stable study → rules → C-STORE to the node → "complete" to the node.

The engine talks to Orthanc through a small :class:`OrthancApi` protocol (implemented in
``mrinode_plugin.py`` on top of Orthanc's ``orthanc`` module), so it imports nothing but
the standard library. Orthanc's change callback only queues the study; worker threads
do the REST calls, so no Orthanc callback ever blocks on a C-STORE.

Loop safety has two locks: result series (from a node's AE, or SEG/SR with a node's
Manufacturer) are never candidates for routing, and an instance already sent to a node
is never sent again (:class:`~plugin.state.RoutingState`).
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from typing import Any, Protocol

from .node_client import NodeError, notify_complete
from .rules import Decision, RuleSet, SeriesInfo, StudyInfo
from .state import RoutingState

__all__ = ["OrthancApi", "Router", "uid_tag"]


class OrthancApi(Protocol):
    """What the engine needs from Orthanc."""

    def get(self, uri: str) -> Any:
        """GET a REST resource and decode its JSON; ``None`` when it does not exist."""

    def get_text(self, uri: str) -> str | None:
        """GET a REST resource as text; ``None`` when it does not exist."""

    def post(self, uri: str, body: Any) -> Any:
        """POST JSON to a REST resource and decode the JSON answer."""

    def put_text(self, uri: str, text: str) -> None:
        """PUT a text body to a REST resource."""

    def log(self, level: str, message: str) -> None:
        """Write one line to Orthanc's log (``level``: info, warning, error)."""


def uid_tag(uid: str | None) -> str:
    """A short, stable, non-reversible tag for a UID (same as ``dicom_node.logs.uid_tag``)."""
    if not uid:
        return "uid:-"
    return "uid:" + hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:10]


class Router:
    """Decide and send, from worker threads.

    Parameters
    ----------
    api : OrthancApi
        Orthanc's REST API, in process.
    rules : RuleSet
        Validated nodes and rules.
    state : RoutingState
        What was sent when.
    status_metadata : str, optional
        A user-defined study metadata name (declared in Orthanc's ``UserMetadata``) set
        to ``routed``, ``send-failed`` or ``results``.
    workers : int
        Worker threads (studies handled at the same time).
    store_timeout_s : float
        How long one C-STORE job to a node may take.
    attempts : int
        C-STORE attempts per send before it is recorded as failed.
    retry_delay_s : float
        First pause between attempts (doubles each time).
    keep_days : float
        Studies not sent to for this many days are forgotten by the state (checked hourly).
    """

    def __init__(
        self,
        api: OrthancApi,
        rules: RuleSet,
        state: RoutingState,
        *,
        status_metadata: str | None = None,
        workers: int = 2,
        store_timeout_s: float = 600.0,
        attempts: int = 3,
        retry_delay_s: float = 5.0,
        keep_days: float = 30.0,
    ) -> None:
        self.api = api
        self.rules = rules
        self.state = state
        self.status_metadata = status_metadata or None
        self.store_timeout_s = store_timeout_s
        self.attempts = max(1, attempts)
        self.retry_delay_s = retry_delay_s
        self.keep_s = keep_days * 86400.0
        self._pruned_at = 0.0
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"mrinode-router-{i}", daemon=True) for i in range(max(1, workers))
        ]

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the worker threads."""
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the workers to finish and wait a little for them."""
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def submit(self, study_id: str) -> None:
        """Queue a study for evaluation (called from Orthanc's change callback)."""
        with self._lock:
            if study_id in self._busy:
                self._again.add(study_id)
                return
            self._busy.add(study_id)
        self._queue.put(study_id)

    def _work(self) -> None:
        while not self._stop.is_set():
            study_id = self._queue.get()
            if study_id is None:
                return
            try:
                self.evaluate(study_id)
            except Exception as exc:  # a worker must survive any one study; logged as an error.
                self.api.log("error", f"mrinode: routing of study {study_id} failed: {type(exc).__name__}: {exc}")
            with self._lock:
                if study_id in self._again:
                    self._again.discard(study_id)
                    requeue = True
                else:
                    self._busy.discard(study_id)
                    requeue = False
            if requeue:
                self._queue.put(study_id)

    # ---------------------------------------------------------------- reading
    def study_info(self, study_id: str) -> StudyInfo | None:
        """Read a study's tags, series and senders from Orthanc (``None`` if gone)."""
        study = self.api.get(f"/studies/{study_id}")
        if not isinstance(study, dict):
            return None
        tags = study.get("MainDicomTags", {})
        series: list[SeriesInfo] = []
        for series_id in study.get("Series", []):
            s = self.api.get(f"/series/{series_id}")
            if not isinstance(s, dict):
                continue
            st = s.get("MainDicomTags", {})
            instances = tuple(s.get("Instances", []))
            calling = ""
            if instances:
                calling = (self.api.get_text(f"/instances/{instances[0]}/metadata/RemoteAET") or "").strip()
            series.append(
                SeriesInfo(
                    series_id=series_id,
                    modality=str(st.get("Modality", "")),
                    body_part=str(st.get("BodyPartExamined", "")),
                    series_description=str(st.get("SeriesDescription", "")),
                    manufacturer=str(st.get("Manufacturer", "")),
                    calling_ae=calling,
                    instance_ids=instances,
                )
            )
        return StudyInfo(
            study_id=study_id,
            study_uid=str(tags.get("StudyInstanceUID", "")),
            study_description=str(tags.get("StudyDescription", "")),
            institution=str(tags.get("InstitutionName", "")),
            series=tuple(series),
        )

    # --------------------------------------------------------------- deciding
    def evaluate(self, study_id: str, *, force: bool = False) -> dict[str, Any]:
        """Match one study and send what is new; returns the recorded decision.

        Parameters
        ----------
        study_id : str
            Orthanc's study identifier.
        force : bool
            Send every chosen instance again, even those sent before.

        Returns
        -------
        dict
            The decision as recorded (``action``: ``send``, ``none``, ``already-sent``
            or ``gone``).
        """
        if time.monotonic() - self._pruned_at > 3600.0:
            self._pruned_at = time.monotonic()
            forgotten = self.state.prune(self.keep_s)
            if forgotten:
                self.api.log("info", f"mrinode: forgot {forgotten} studies routed more than {self.keep_s / 86400:.0f} days ago.")
        info = self.study_info(study_id)
        if info is None:
            return {"study_id": study_id, "action": "gone"}
        decision = self.rules.decide(info)
        if decision.own_series_ids:
            self._note_results(info, decision)
        record: dict[str, Any] = {
            "study_id": study_id,
            "study_uid": info.study_uid,
            "rule": decision.rule,
            "node": decision.node,
            "series": len(decision.series_ids),
            "result_series": len(decision.own_series_ids),
            "reasons": decision.reasons,
        }
        if not decision.matched:
            record["action"] = "none"
            self.state.record_decision(record)
            self.api.log("info", f"mrinode: study {uid_tag(info.study_uid)} matches no rule; not routed.")
            return record
        chosen = [i for s in info.series if s.series_id in decision.series_ids for i in s.instance_ids]
        assert decision.node is not None
        todo = chosen if force else self.state.unsent(study_id, decision.node, chosen)
        record["instances"] = len(chosen)
        record["instances_new"] = len(todo)
        if not todo:
            record["action"] = "already-sent"
            self.state.record_decision(record)
            return record
        record["action"] = "send"
        self.state.record_decision(record)
        self._send(info, decision, todo)
        return record

    def _note_results(self, info: StudyInfo, decision: Decision) -> None:
        if self.state.record_results(info.study_id, decision.own_series_ids):
            self.api.log(
                "warning",
                f"mrinode: results are in for study {uid_tag(info.study_uid)} "
                f"({len(decision.own_series_ids)} result series).",
            )
            self._set_status(info.study_id, "results")

    def _set_status(self, study_id: str, status: str) -> None:
        if self.status_metadata is None:
            return
        try:
            self.api.put_text(f"/studies/{study_id}/metadata/{self.status_metadata}", status)
        except RuntimeError as exc:
            self.api.log("error", f"mrinode: cannot set study metadata {self.status_metadata!r} ({exc}).")

    # ---------------------------------------------------------------- sending
    def _store_job(self, modality: str, instance_ids: list[str]) -> tuple[bool, str]:
        """Run one asynchronous C-STORE job in Orthanc and wait for its end."""
        try:
            answer = self.api.post(
                f"/modalities/{modality}/store",
                {"Resources": instance_ids, "Asynchronous": True, "Priority": 0},
            )
        except RuntimeError as exc:
            return False, f"Orthanc refused the C-STORE to modality {modality!r}: {exc}"
        job_id = answer.get("ID") if isinstance(answer, dict) else None
        if not job_id:
            return False, f"Orthanc gave no job for the C-STORE to modality {modality!r}: {answer!r}"
        started = time.monotonic()
        deadline = started + self.store_timeout_s
        delay = 0.05
        while time.monotonic() < deadline:
            job = self.api.get(f"/jobs/{job_id}")
            if job is None:
                return False, f"C-STORE job {job_id} to {modality!r} vanished from Orthanc's job history"
            job_state = job.get("State") if isinstance(job, dict) else None
            if job_state == "Success":
                return True, f"C-STORE job {job_id} to {modality!r} succeeded"
            if job_state == "Failure":
                desc = job.get("ErrorDescription", "") if isinstance(job, dict) else ""
                return False, f"C-STORE job {job_id} to {modality!r} failed: {desc}"
            time.sleep(delay)
            # a study's C-STORE usually ends within a second: look every 50 ms until then (an
            # in-process REST call), then back off to every 0.5 s
            if time.monotonic() - started > 1.0:
                delay = min(delay * 2, 0.5)
        return False, f"C-STORE job {job_id} to {modality!r} did not finish within {self.store_timeout_s:.0f} s"

    def _send(self, info: StudyInfo, decision: Decision, instance_ids: list[str]) -> None:
        assert decision.node is not None and decision.rule is not None
        node = self.rules.nodes[decision.node]
        tag = uid_tag(info.study_uid)
        self.api.log(
            "warning",
            f"mrinode: study {tag} routed by rule {decision.rule!r} to node {node.name!r} "
            f"({len(decision.series_ids)} series, {len(instance_ids)} new instances).",
        )
        started = time.time()
        ok, detail = False, ""
        pause = self.retry_delay_s
        for attempt in range(1, self.attempts + 1):
            ok, detail = self._store_job(node.modality, instance_ids)
            if ok or self._stop.is_set():
                break
            self.api.log("warning", f"mrinode: study {tag}, attempt {attempt}/{self.attempts}: {detail}")
            if attempt < self.attempts:
                time.sleep(pause)
                pause *= 2
        if ok:
            try:
                notify_complete(node, info.study_uid)
                detail += "; node told the study is complete"
            except NodeError as exc:
                # The instances are there; the node's own stable timer will complete it.
                detail += f"; completion call failed: {exc}"
                self.api.log("warning", f"mrinode: study {tag}: {exc}")
        else:
            self.api.log("error", f"mrinode: study {tag} could not be sent to node {node.name!r}: {detail}")
        self.state.record_send(
            info.study_id,
            study_uid=info.study_uid,
            node=node.name,
            rule=decision.rule,
            instance_ids=instance_ids,
            ok=ok,
            detail=detail,
            started=started,
        )
        if not self.state.study(info.study_id).get("results"):
            self._set_status(info.study_id, "routed" if ok else "send-failed")
        self.api.log("info", f"mrinode: study {tag}: {detail}.")
