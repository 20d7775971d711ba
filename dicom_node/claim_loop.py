"""The claim-and-handle loop shared by the worker and export threads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from dicom_node.queue import Job

__all__ = ["claim_loop"]

log = logging.getLogger(__name__)


def claim_loop(
    stop: threading.Event,
    wake: threading.Event,
    claim: Callable[[], Job | None],
    handle: Callable[[Job], object],
    on_error: Callable[[Job, Exception], None],
    what: str,
) -> None:
    """Claim a job, handle it, repeat until ``stop``; no error ends the thread.

    Parameters
    ----------
    stop : threading.Event
        Set to end the loop.
    wake : threading.Event
        Set to claim again at once instead of after the 0.5 s idle wait.
    claim : callable
        Returns the next job, or ``None`` when there is none.
    handle : callable
        Does the work for one job.
    on_error : callable
        Records an unexpected error of ``handle`` against the job (a failed attempt).
    what : str
        Names the work in log lines ("job", "export").
    """
    while not stop.is_set():
        try:
            job = claim()
        except Exception:  # a locked or failing db must not end the thread: logged, retried
            log.exception("claiming the next %s failed", what)
            job = None
        if job is None:
            wake.wait(0.5)
            wake.clear()
            continue
        try:
            handle(job)
        except Exception as exc:  # an unexpected error is a failed attempt of this job, never the thread's end
            log.exception("job %d: %s error", job.id, what)
            on_error(job, exc)
