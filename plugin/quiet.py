"""A sub-second quiet period: route a study once no instance has arrived for it for a while.

Orthanc's own stable-study event (``StableAge``) counts whole seconds on a seconds clock: with
``StableAge = 1`` (its smallest value) a study is reported 1 to 2 s after its last instance. A
PACS that receives studies in one association each (an archive, a router, the demo's sender) can
do better: :class:`QuietTimer` watches Orthanc's ``NEW_INSTANCE`` changes and hands a study to
the router ``quiet_s`` seconds (``"Mrinode": {"QuietPeriod": 0.3}``) after its last instance.

Orthanc's ``STABLE_STUDY`` still arrives later; :meth:`QuietTimer.already_routed` tells the
plugin to drop it when the timer routed the study and nothing arrived since. An instance that
comes after the study was routed starts the clock again, and the router sends only what is new
(as it does when a study becomes stable twice), so a slow sender costs a second, partial send,
never a lost instance. Standard library only (Orthanc's embedded Python).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["QuietTimer", "parse_quiet_period"]

#: How many series-to-study answers are remembered (oldest forgotten first).
_SERIES_CACHE = 4096


class _Api(Protocol):
    def get(self, uri: str) -> Any: ...

    def log(self, level: str, message: str) -> None: ...


def parse_quiet_period(value: Any) -> tuple[float, str | None]:
    """Read ``Mrinode.QuietPeriod``: seconds (0 = off), and an error sentence when it is invalid.

    Parameters
    ----------
    value : Any
        The configured value (``None`` when the key is absent).

    Returns
    -------
    tuple of (float, str or None)
        The quiet period in seconds (0 when absent or invalid) and, when invalid, a sentence
        naming the key.
    """
    if value is None:
        return 0.0, None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0, (f"Mrinode.QuietPeriod must be a number of seconds (0 = off), not {value!r}; "
                     "routing waits for Orthanc's StableAge only.")
    seconds = float(value)
    if not 0.0 <= seconds <= 3600.0:
        return 0.0, (f"Mrinode.QuietPeriod must be between 0 and 3600 seconds, not {value!r}; "
                     "routing waits for Orthanc's StableAge only.")
    return seconds, None


class QuietTimer:
    """Hands a study to ``submit`` once ``quiet_s`` seconds passed without a new instance.

    Parameters
    ----------
    api : object
        ``get(uri)`` (Orthanc's REST API in process; ``None`` for a missing resource) and ``log``.
    submit : callable
        Called with Orthanc's study identifier (the router's :meth:`~plugin.router.Router.submit`).
    quiet_s : float
        Seconds without a new instance before the study is handed over.
    tick_s : float
        How often the timer looks (default 0.05 s).
    """

    def __init__(self, api: _Api, submit: Callable[[str], None], quiet_s: float, *, tick_s: float = 0.05) -> None:
        self.api = api
        self.submit = submit
        self.quiet_s = float(quiet_s)
        self.tick_s = float(tick_s)
        self._lock = threading.Lock()
        self._arrived: list[tuple[str, float]] = []  # (instance id, monotonic time), not yet resolved
        self._last: dict[str, float] = {}  # study id -> monotonic time of its last instance
        self._routed: set[str] = set()  # studies this timer handed over, nothing arrived since
        self._series: OrderedDict[str, str] = OrderedDict()  # series id -> study id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mrinode-quiet", daemon=True)

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the timer thread."""
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the timer thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -------------------------------------------------------------- callbacks
    def instance_stored(self, instance_id: str) -> None:
        """Note a new instance (from Orthanc's change callback: no REST call here)."""
        with self._lock:
            self._arrived.append((instance_id, time.monotonic()))

    def already_routed(self, study_id: str) -> bool:
        """Whether Orthanc's ``STABLE_STUDY`` for this study can be dropped.

        True (once) when this timer handed the study over and no instance arrived since.
        """
        with self._lock:
            if study_id in self._routed and study_id not in self._last:
                self._routed.discard(study_id)
                return True
            return False

    # ------------------------------------------------------------------ work
    def _study_of(self, instance_id: str) -> str | None:
        instance = self.api.get(f"/instances/{instance_id}")
        series_id = instance.get("ParentSeries") if isinstance(instance, dict) else None
        if not series_id:
            return None  # deleted again already
        study_id = self._series.get(series_id)
        if study_id is None:
            series = self.api.get(f"/series/{series_id}")
            study_id = series.get("ParentStudy") if isinstance(series, dict) else None
            if not study_id:
                return None
            self._series[series_id] = study_id
            while len(self._series) > _SERIES_CACHE:
                self._series.popitem(last=False)
        return str(study_id)

    def tick(self, now: float | None = None) -> list[str]:
        """Resolve new instances to their studies and hand over the quiet ones; returns those.

        Parameters
        ----------
        now : float, optional
            ``time.monotonic()`` (for tests).
        """
        with self._lock:
            arrived, self._arrived = self._arrived, []
        for instance_id, at in arrived:
            study_id = self._study_of(instance_id)
            if study_id is None:
                continue
            with self._lock:
                self._last[study_id] = max(at, self._last.get(study_id, at))
                self._routed.discard(study_id)
        now = time.monotonic() if now is None else now
        with self._lock:
            due = [s for s, at in self._last.items() if now - at >= self.quiet_s]
            for study_id in due:
                del self._last[study_id]
                self._routed.add(study_id)
        for study_id in due:
            self.submit(study_id)
        return due

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception as exc:  # the timer must outlive any one bad answer; Orthanc's StableAge still routes.
                self.api.log("error", f"mrinode: quiet-period timer: {type(exc).__name__}: {exc}")
