"""Prometheus metrics of one node (own registry; no module-level state)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["NodeMetrics", "retrain_records"]


class _QueueDepth(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("mrinode_jobs", "Jobs by state (queue depth = queued)", labels=["state"])
        for state, n in self._counts().items():
            g.add_metric([state], n)
        yield g


class _LastRetrain(Collector):
    """The last retraining run of every registry the node serves from (read at each scrape)."""

    def __init__(self, paths: Callable[[], list[Path]]) -> None:
        self._paths = paths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        when = GaugeMetricFamily("mrinode_retrain_last_run_timestamp_seconds", "When the last retraining run ended",
                                 labels=["model"])
        decision = GaugeMetricFamily("mrinode_retrain_last_decision",
                                     "1 for the last retraining run's decision (promoted, refused, skipped, failed)",
                                     labels=["model", "decision"])
        metric = GaugeMetricFamily("mrinode_retrain_last_metric",
                                   "The last retraining run's target metric on the validation set, per bundle",
                                   labels=["model", "metric", "bundle"])
        for path in self._paths():
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            model = str(rec.get("model", ""))
            when.add_metric([model], float(rec.get("finished_at") or 0.0))
            decision.add_metric([model, str(rec.get("decision", ""))], 1.0)
            for bundle in ("candidate", "previous"):
                if isinstance(rec.get(bundle), int | float):
                    metric.add_metric([model, str(rec.get("metric", "")), bundle], float(rec[bundle]))
        yield when
        yield decision
        yield metric


def retrain_records(pipelines: Iterable[Any]) -> list[Path]:
    """The last-run records of the registries whose served bundles the pipelines run (``options.model``)."""
    from models.versions import LAST_RUN, registry_root

    out: list[Path] = []
    for p in pipelines:
        ref = (getattr(p, "options", None) or {}).get("model")
        root = registry_root(str(ref)) if ref else None
        if root is not None and root / LAST_RUN not in out:
            out.append(root / LAST_RUN)
    return out


class NodeMetrics:
    """The node's counters and histograms.

    Parameters
    ----------
    job_counts : callable, optional
        Returns ``{state: count}``; read at each scrape for the ``mrinode_jobs`` gauge.
    retrain_records : callable, optional
        Returns the ``retrain-last.json`` files to report (``mrinode_retrain_last_*``).
    """

    def __init__(self, job_counts: Callable[[], dict[str, int]] | None = None,
                 retrain_records: Callable[[], list[Path]] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.instances_received = Counter("mrinode_instances_received", "Instances stored", registry=r)
        self.bytes_received = Counter("mrinode_bytes_received", "Bytes of instances stored", registry=r)
        self.store_failures = Counter(
            "mrinode_store_failures", "C-STORE requests answered with a failure status", ["status"], registry=r
        )
        self.associations_accepted = Counter("mrinode_associations_accepted", "Associations accepted", registry=r)
        self.associations_refused = Counter(
            "mrinode_associations_refused", "Associations refused", ["reason"], registry=r
        )
        self.studies_completed = Counter("mrinode_studies_completed", "Studies completed", ["how"], registry=r)
        self.job_stage_seconds = Histogram(
            "mrinode_job_stage_seconds", "Seconds per job stage", ["stage"], registry=r,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
        )
        self.jobs_finished = Counter("mrinode_jobs_finished", "Jobs finished", ["state"], registry=r)
        self.objects_sent = Counter("mrinode_objects_sent", "Result objects delivered", ["destination"], registry=r)
        self.export_failures = Counter(
            "mrinode_export_failures", "Failed export attempts", ["destination"], registry=r
        )
        self.connections_dropped = Counter(
            "mrinode_connections_dropped",
            "Connections closed before or without association (timeout, per-host cap, oversized PDU, ...)",
            ["reason"], registry=r,
        )
        self.disk_low = Gauge(
            "mrinode_disk_low", "1 while the spool's free space is below dicom.min_free_mb (degraded)", registry=r
        )
        self.spool_free_bytes = Gauge("mrinode_spool_free_bytes", "Free bytes on the spool's file system", registry=r)
        self.associations_active = Gauge(
            "mrinode_associations_active", "Association slots in use (admitted peers)", registry=r
        )
        self.connections_pending = Gauge(
            "mrinode_connections_pending", "Connections waiting for their association request", registry=r
        )
        self.model_loads = Counter(
            "mrinode_model_loads", "Model bundles loaded by a worker", ["model", "version"], registry=r
        )
        self.worker_restarts = Counter(
            "mrinode_worker_restarts", "Warm worker processes restarted", ["reason"], registry=r
        )
        if job_counts is not None:
            r.register(_QueueDepth(job_counts))
        if retrain_records is not None:
            r.register(_LastRetrain(retrain_records))

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
