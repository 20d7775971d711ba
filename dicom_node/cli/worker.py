"""``mrinode worker --config FILE [--device cuda:0] [--concurrency 1]``: a Celery worker for a node.

It runs on any machine that reaches the broker (``scale.broker_url``) and the node's API
(``scale.node_url``): one process per GPU (``--device cuda:N``), or on the CPU. It consumes
the queue of its device kind (``gpu`` or ``cpu``; ``--queues`` to choose), keeps the
configured pipelines' models warm in its worker children, and sends every result back to
the node, which exports it.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from dicom_node.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
        client_args = _check(cfg, args)
    except ConfigError as exc:
        print(f"mrinode worker: {exc}", file=sys.stderr)
        return 2
    from dicom_node.scale.app import device_queue, make_app
    from dicom_node.scale.remote import NodeClient
    from dicom_node.scale.task import WorkerRuntime, default_worker_name, register_task

    name = args.name or default_worker_name(args.device)
    queues = [q.strip() for q in (args.queues or device_queue(args.device)).split(",") if q.strip()]
    app = make_app(cfg)
    client = NodeClient(*client_args, timeout_s=cfg.scale.http_timeout_s)
    runtime = WorkerRuntime(cfg, client, args.device, args.concurrency, name)
    register_task(app, runtime)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    runtime.start()
    try:
        worker = app.Worker(hostname=name, pool="threads", concurrency=args.concurrency, queues=queues,
                            loglevel=args.log_level.upper(), prefetch_multiplier=1, without_gossip=True,
                            without_mingle=True, optimization="fair", no_color=True)
        worker.start()
        return int(worker.exitcode or 0)
    finally:
        runtime.close()
        client.close()


def _check(cfg: object, args: argparse.Namespace) -> tuple[str, str]:
    """The worker's own checks; returns the node's URL and token.

    Raises
    ------
    ConfigError
        Naming the key (or the option) at fault.
    """
    from dicom_node.config import ConfigError, NodeConfig
    from dicom_node.scale.app import QUEUES
    from dicom_node.workers.process import device_env

    assert isinstance(cfg, NodeConfig)
    s = cfg.scale
    if s.engine != "celery" or not s.broker_url:
        raise ConfigError("config key 'scale.engine': a worker needs engine = 'celery' and scale.broker_url.")
    from dicom_node.scale.app import check_broker_client

    check_broker_client(cfg)
    if not s.node_url:
        raise ConfigError("config key 'scale.node_url': a worker needs the node's API URL (http://node:8000) to "
                          "fetch studies and send results.")
    token = s.node_token
    if token is None and s.node_token_file is not None:
        try:
            token = s.node_token_file.read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"config key 'scale.node_token_file': cannot read it ({exc}).") from None
    token = token or cfg.api.resolve_token()
    if not token:
        raise ConfigError("config key 'scale.node_token': a worker needs the node's API token "
                          "(scale.node_token, scale.node_token_file or api.token).")
    if s.consumer_timeout_s <= cfg.workers.timeout_s:
        raise ConfigError(f"config key 'scale.consumer_timeout_s': {s.consumer_timeout_s:g} s must be above "
                          f"workers.timeout_s = {cfg.workers.timeout_s:g} s, the longest job.")
    try:
        device_env(args.device)
    except ValueError as exc:
        raise ConfigError(f"option --device: {exc}") from None
    if args.concurrency < 1:
        raise ConfigError("option --concurrency: must be 1 or more.")
    for q in (args.queues or "").split(","):
        if q.strip() and q.strip() not in QUEUES:
            raise ConfigError(f"option --queues: {q.strip()!r} is not a queue (use {', '.join(QUEUES)}).")
    return s.node_url, token


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``worker`` sub-command."""
    p = subparsers.add_parser(
        "worker",
        help="run a Celery worker for a node ([scale] engine = 'celery')",
        description="Run a Celery worker that takes the node's jobs from the broker, runs them in warm worker "
                    "processes and sends the results back to the node. See docs/scale.md.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="configuration (TOML) with [scale]")
    p.add_argument("--device", default="cpu", help="cpu, auto, cuda or cuda:N (default cpu); cuda* consumes 'gpu'")
    p.add_argument("--concurrency", type=int, default=1, help="jobs at once, one warm process each (default 1)")
    p.add_argument("--queues", default=None, help="queues to consume, comma-separated (default: the device's kind)")
    p.add_argument("--name", default=None, help="the worker's name (default DEVICE-PID@HOST)")
    p.set_defaults(func=_run)
