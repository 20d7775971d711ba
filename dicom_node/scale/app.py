"""The Celery application of the node and its workers, built from ``[scale]``.

Settings that long medical jobs need:

- ``task_acks_late``: a message is acknowledged when its job has finished, not when it is
  received, so a worker lost mid-job (``kill -9``, power) leaves it to the broker, which
  delivers it to another worker;
- ``task_reject_on_worker_lost``: the same when a pool's child dies;
- ``worker_prefetch_multiplier = 1``: a worker holds one job at a time per slot, the others
  stay in the broker for the other workers;
- one queue per device kind (:data:`QUEUES`), persistent messages, durable queues with a
  dead-letter exchange: a message rejected for good (the job's attempts spent) lands in
  ``scale.dead_letter_queue``;
- ``visibility_timeout`` (Redis) = ``scale.consumer_timeout_s``; on RabbitMQ the broker's own
  ``consumer_timeout`` must be above the longest job (``deploy/compose/rabbitmq.conf``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    from dicom_node.config import NodeConfig

__all__ = ["QUEUES", "TASK_NAME", "check_broker_client", "device_queue", "job_queue", "make_app"]

#: The device kinds, one queue each.
QUEUES: tuple[str, ...] = ("gpu", "cpu")
#: The one task: run a job's pipelines on a study.
TASK_NAME = "mrinode.run_job"
_EXCHANGE = "mrinode"


def device_queue(device: str) -> str:
    """The queue a worker on ``device`` consumes: ``gpu`` for ``cuda``/``cuda:N``, else ``cpu``.

    Parameters
    ----------
    device : str
        ``cpu``, ``auto``, ``cuda`` or ``cuda:N``.
    """
    return "gpu" if device.startswith("cuda") else "cpu"


def job_queue(cfg: NodeConfig) -> str:
    """The queue of this node's jobs: ``gpu`` when an enabled pipeline is in ``scale.gpu_pipelines``."""
    gpu = set(cfg.scale.gpu_pipelines)
    return "gpu" if any(p.enabled and p.name in gpu for p in cfg.pipelines) else "cpu"


def check_broker_client(cfg: NodeConfig) -> None:
    """Check that the client library of ``scale.broker_url``'s and ``result_backend``'s scheme is installed.

    Raises
    ------
    ConfigError
        Naming the key: a Redis URL without the ``redis`` package.
    """
    import importlib.util

    from dicom_node.config_models import ConfigError

    for key in ("broker_url", "result_backend"):
        url = getattr(cfg.scale, key) or ""
        if url.startswith(("redis://", "rediss://")) and importlib.util.find_spec("redis") is None:
            raise ConfigError(f"config key 'scale.{key}': a Redis URL needs the redis client "
                              "(pip install 'celery[redis]'); RabbitMQ (amqp://) needs nothing more.")


def _queues(cfg: NodeConfig) -> list[Any]:
    from kombu import Exchange, Queue

    exchange = Exchange(_EXCHANGE, type="direct", durable=True)
    dead = cfg.scale.dead_letter_queue
    args = {"x-dead-letter-exchange": dead, "x-dead-letter-routing-key": dead}
    return [Queue(q, exchange, routing_key=q, durable=True, queue_arguments=args) for q in QUEUES]


def dead_letter_queue(cfg: NodeConfig) -> Any:
    """The dead-letter queue (and its exchange), to declare before the first job is given up."""
    from kombu import Exchange, Queue

    dead = cfg.scale.dead_letter_queue
    return Queue(dead, Exchange(dead, type="direct", durable=True), routing_key=dead, durable=True)


def make_app(cfg: NodeConfig) -> Celery:
    """The Celery application for ``cfg`` (broker, backend, queues, the settings above).

    Parameters
    ----------
    cfg : NodeConfig
        The configuration; ``scale.broker_url`` must be set.

    Returns
    -------
    Celery
        The application; the worker's task is registered by :mod:`dicom_node.scale.task`.
    """
    from celery import Celery

    s = cfg.scale
    assert s.broker_url, "scale.broker_url is checked by the configuration"
    app = Celery("mrinode", broker=s.broker_url, backend=s.result_backend, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=_queues(cfg),
        task_default_queue="cpu",
        task_default_exchange=_EXCHANGE,
        task_default_routing_key="cpu",
        task_default_delivery_mode="persistent",
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=s.result_backend is None,
        result_expires=24 * 3600,
        broker_transport_options={"visibility_timeout": s.consumer_timeout_s, "confirm_publish": True},
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_heartbeat=30,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # events for Flower (``celery --broker URL flower``) and the task's started state
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        enable_utc=True,
    )
    return app
