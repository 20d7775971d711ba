"""Scale-out on Celery + RabbitMQ (``[scale] engine = "celery"``).

The node stays the one receive point and the source of truth (its SQLite job table); the
model work runs in ``mrinode worker`` processes on any machine, each with the same warm
worker child as the local pool (:mod:`dicom_node.workers`).

- :mod:`.app`: the Celery application and its settings for long medical jobs (acks late,
  reject on worker loss, prefetch 1, one queue per device kind, a dead-letter queue);
- :mod:`.dispatcher`: the node's side, which replaces the local pool: claims queued jobs and
  sends one task each;
- :mod:`.tasks_table`: the node's record of each task (sent, started, by which worker, result back);
- :mod:`.router`: the node's API for workers: the spool read-only over DICOMweb WADO-RS,
  the task's start, result upload and failure (token-protected);
- :mod:`.remote`: a worker's calls to the node (fetch a study, report, upload);
- :mod:`.task`: the worker's task: fetch, run in the warm child, upload.

Nothing here is imported by the node unless the engine is ``celery`` (Celery is not light).
"""

from __future__ import annotations

__all__: list[str] = []
