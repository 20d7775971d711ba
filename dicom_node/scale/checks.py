"""Start-up checks of ``[scale]`` for ``mrinode check`` / ``serve`` (:mod:`dicom_node.startup`'s report)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dicom_node.config_models import ConfigError

if TYPE_CHECKING:
    from dicom_node.config import NodeConfig
    from dicom_node.startup import CheckReport

__all__ = ["check_scale"]

#: Seconds the broker has to answer the start-up check.
REACH_TIMEOUT_S = 3.0


def check_scale(cfg: NodeConfig, report: CheckReport, *, reach: bool = True) -> None:
    """Add the checks of ``[scale] engine = "celery"`` to a start-up report (nothing for ``local``).

    Errors: what :func:`dicom_node.scale.dispatcher.check_node_config` refuses (the API token,
    ``consumer_timeout_s``, ``gpu_pipelines`` names, a Redis URL without its client).
    Warning: a broker that does not answer (the node starts anyway; jobs wait ``queued``).

    Parameters
    ----------
    cfg : NodeConfig
        The validated configuration.
    report : CheckReport
        Where errors, warnings and passes go.
    reach : bool
        Whether to connect to the broker.
    """
    if cfg.scale.engine != "celery":
        return
    from dicom_node.scale.dispatcher import check_node_config

    try:
        check_node_config(cfg)
    except ConfigError as exc:
        report.errors.append(str(exc))
        return
    report.passed.append("scale: engine = celery; API token, consumer_timeout_s and gpu_pipelines agree")
    if not reach:
        return
    from kombu import Connection

    try:
        with Connection(cfg.scale.broker_url, connect_timeout=REACH_TIMEOUT_S) as conn:
            conn.ensure_connection(max_retries=1, timeout=REACH_TIMEOUT_S)
    except Exception as exc:  # kombu raises many kinds for an unreachable broker
        report.warnings.append(f"config key 'scale.broker_url': the broker does not answer ({type(exc).__name__}); "
                               "jobs stay queued on the node until it does")
        return
    report.passed.append("scale: the broker answers")
