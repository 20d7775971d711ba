"""The plugin's quiet-period timer (``Mrinode.QuietPeriod``) on a fake Orthanc REST API.

The timer in a real Orthanc is exercised by ``tests/e2e/test_pacs_routing.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from plugin.quiet import QuietTimer, parse_quiet_period


class FakeOrthanc:
    """Instances and series of two studies; counts the REST calls."""

    def __init__(self) -> None:
        self.instances = {f"i{n}": {"ParentSeries": "s1" if n < 5 else "s2"} for n in range(8)}
        self.series = {"s1": {"ParentStudy": "A"}, "s2": {"ParentStudy": "B"}}
        self.calls: list[str] = []
        self.logs: list[str] = []

    def get(self, uri: str) -> Any:
        self.calls.append(uri)
        kind, rid = uri.strip("/").split("/")
        return (self.instances if kind == "instances" else self.series).get(rid)

    def log(self, level: str, message: str) -> None:
        self.logs.append(message)


def _timer(quiet_s: float = 0.3) -> tuple[QuietTimer, FakeOrthanc, list[str]]:
    api, submitted = FakeOrthanc(), []
    return QuietTimer(api, submitted.append, quiet_s), api, submitted


def test_a_study_is_handed_over_once_after_its_quiet_period_only() -> None:
    timer, api, submitted = _timer(0.3)
    for n in range(5):
        timer.instance_stored(f"i{n}")
    t0 = max(at for _, at in timer._arrived)
    assert timer.tick(now=t0 + 0.1) == [] and submitted == []  # still arriving
    assert timer.tick(now=t0 + 0.31) == ["A"] and submitted == ["A"]
    assert timer.tick(now=t0 + 5) == [] and submitted == ["A"]  # once
    # one series lookup for five instances of one series
    assert sum(c.startswith("/series/") for c in api.calls) == 1


def test_a_late_instance_restarts_the_clock_and_the_study_goes_again() -> None:
    timer, _, submitted = _timer(0.3)
    timer.instance_stored("i0")
    t0 = timer._arrived[-1][1]
    timer.tick(now=t0 + 0.5)
    assert submitted == ["A"]
    timer.instance_stored("i1")  # the scanner was slow: the router will send only this one
    t1 = timer._arrived[-1][1]
    assert timer.tick(now=t1 + 0.1) == []
    assert not timer.already_routed("A")  # Orthanc's STABLE_STUDY must not be dropped meanwhile
    assert timer.tick(now=t1 + 0.4) == ["A"] and submitted == ["A", "A"]


def test_stable_study_is_dropped_only_when_the_timer_routed_it() -> None:
    timer, _, _ = _timer(0.3)
    assert not timer.already_routed("A")  # never seen by the timer: Orthanc's event routes it
    timer.instance_stored("i0")
    timer.instance_stored("i6")
    t0 = timer._arrived[-1][1]
    assert sorted(timer.tick(now=t0 + 1)) == ["A", "B"]
    assert timer.already_routed("A") and not timer.already_routed("A")  # dropped once
    assert timer.already_routed("B")


def test_a_deleted_instance_or_a_failing_lookup_loses_no_other_study() -> None:
    timer, _, submitted = _timer(0.3)
    timer.instance_stored("gone")
    timer.instance_stored("i6")
    t0 = timer._arrived[-1][1]
    assert timer.tick(now=t0 + 1) == ["B"] and submitted == ["B"]


@pytest.mark.parametrize(("value", "seconds", "error"), [
    (None, 0.0, False), (0, 0.0, False), (0.3, 0.3, False), (2, 2.0, False),
    ("0.3", 0.0, True), (True, 0.0, True), (-1, 0.0, True),
])
def test_quiet_period_setting(value: Any, seconds: float, error: bool) -> None:
    got, sentence = parse_quiet_period(value)
    assert got == seconds and (sentence is not None) == error
    if error:
        assert "Mrinode.QuietPeriod" in sentence  # type: ignore[operator]
