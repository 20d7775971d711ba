"""Routing state: what was sent, persistence, bounded decisions, a damaged file."""

from __future__ import annotations

import json
from pathlib import Path

from plugin.state import RoutingState


def test_only_new_instances_are_unsent_after_a_successful_send(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = RoutingState(path)
    assert state.unsent("s", "node", ["a", "b"]) == ["a", "b"]
    state.record_send("s", study_uid="1.2", node="node", rule="r", instance_ids=["a", "b"], ok=True, detail="ok")
    assert state.unsent("s", "node", ["a", "b", "c"]) == ["c"]
    assert state.unsent("s", "other-node", ["a"]) == ["a"]
    # A failed send marks nothing as sent.
    state.record_send("s", study_uid="1.2", node="node", rule="r", instance_ids=["c"], ok=False, detail="down")
    assert state.unsent("s", "node", ["a", "b", "c"]) == ["c"]
    view = state.study("s")
    assert view["sent"] == {"node": 2} and view["status"] == "send-failed"
    assert [s["ok"] for s in view["sends"]] == [True, False]
    # Persisted: a new process (an Orthanc restart) remembers.
    again = RoutingState(path)
    assert again.unsent("s", "node", ["a", "b", "c"]) == ["c"]
    assert again.load_error is None


def test_results_are_recorded_once_and_forget_drops_the_study(tmp_path: Path) -> None:
    state = RoutingState(tmp_path / "state.json")
    assert state.record_results("s", ["seg"]) is True
    assert state.record_results("s", ["seg"]) is False
    assert state.record_results("s", ["seg", "sr"]) is True
    assert state.study("s")["results"] == ["seg", "sr"] and state.study("s")["status"] == "results"
    state.forget("s")
    assert state.study("s") == {}
    assert RoutingState(tmp_path / "state.json").study("s") == {}


def test_decisions_are_bounded_and_filtered() -> None:
    state = RoutingState(None, max_decisions=3)
    for i in range(5):
        state.record_decision({"study_id": "a" if i % 2 else "b", "n": i})
    assert [d["n"] for d in state.decisions()] == [2, 3, 4]
    assert [d["n"] for d in state.decisions("a")] == [3]
    assert [d["n"] for d in state.decisions(limit=1)] == [4]


def test_damaged_state_file_starts_empty_and_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    state = RoutingState(path)
    assert state.load_error is not None and str(path) in state.load_error
    assert (tmp_path / "state.json.bad").read_text() == "{not json"
    state.record_decision({"study_id": "x"})
    assert json.loads(path.read_text())["version"] == 1


def test_prune_forgets_only_old_studies(tmp_path: Path) -> None:
    state = RoutingState(tmp_path / "state.json")
    state.record_send("old", study_uid="1", node="n", rule="r", instance_ids=["a"], ok=True, started=0.0, finished=100.0)
    state.record_send("new", study_uid="2", node="n", rule="r", instance_ids=["b"], ok=True, started=0.0, finished=1000.0)
    state.record_results("new", ["seg"])
    assert state.prune(500.0, now=1200.0) == 1
    assert state.study("old") == {} and state.study("new")["sent"] == {"n": 1}
    assert RoutingState(tmp_path / "state.json").unsent("old", "n", ["a"]) == ["a"]
