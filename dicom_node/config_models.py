"""The typed sections of the node configuration (pydantic v2, ``extra="forbid"``).

Loading and error messages are in :mod:`dicom_node.config`, which re-exports these.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    field_validator,
    model_validator,
)

from dicom_node.sequences import parse_sequence_label
from dicom_node.typed_config import TAG_PREFIX

__all__ = [
    "DESTINATION_KINDS",
    "AllowedCaller",
    "ApiConfig",
    "ConfigError",
    "DestinationAuth",
    "DestinationConfig",
    "DicomConfig",
    "DicomDestination",
    "DicomWebDestination",
    "EmailConfig",
    "ExportConfig",
    "KeyedValueError",
    "LoggingConfig",
    "NodeConfig",
    "NodeSection",
    "PipelineConfig",
    "RoutingConfig",
    "TlsConfig",
    "TrackerConfig",
    "WorkersConfig",
]

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable, no backslash


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names every bad key."""


def _check_ae(value: str) -> str:
    stripped = value.strip()
    if not stripped or not _AE_RE.match(value) or len(stripped) > 16:
        raise ValueError(f"{value!r} is not an AE title (1-16 printable characters, no backslash)")
    return stripped


#: A path written as a TOML string (the one coercion strict sections allow).
LaxPath = Annotated[Path, Strict(False)]


class KeyedValueError(ValueError):
    """A cross-key check's failure that names its key (the config loader puts it in the message).

    Parameters
    ----------
    key : str
        The dotted key at fault, e.g. ``"routing.default_destinations"``.
    message : str
        What is wrong with it.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class _Section(BaseModel):
    # strict: no coercion of strings to numbers or booleans (``port = "11400"`` is refused with the
    # key named); a TOML integer is still a valid float.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NodeSection(_Section):
    """``[node]``: identity and where data lives."""

    data_dir: LaxPath = Path("./var")
    ae_title: str = "MRINODE"

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return _check_ae(v)


class TlsConfig(_Section):
    """``[dicom.tls]``: optional DICOM TLS for the SCP."""

    enabled: bool = False
    cert: LaxPath | None = None
    key: LaxPath | None = None
    ca: LaxPath | None = None
    verify_client: bool = False

    @model_validator(mode="after")
    def _needs_files(self) -> TlsConfig:
        if self.enabled and (self.cert is None or self.key is None):
            raise ValueError("tls.enabled needs both 'cert' and 'key'")
        if self.verify_client and self.ca is None:
            raise ValueError("tls.verify_client needs 'ca' (the CA that signs client certificates)")
        return self


class AllowedCaller(_Section):
    """One ``[[dicom.allowed_callers]]`` entry: a calling AE title and, optionally, its host."""

    ae_title: str
    host: str | None = None

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return _check_ae(v)


class DicomConfig(_Section):
    """``[dicom]``: the SCP."""

    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=1, le=65535)
    max_pdu: int = Field(default=262144, ge=0, le=2**32 - 1)
    check_called_ae: bool = True
    allow_any_caller: bool = False
    allowed_callers: list[AllowedCaller] = Field(default_factory=list)
    network_timeout_s: float = Field(default=60.0, gt=0)
    max_associations: int = Field(default=16, ge=1)
    spool_fsync: Literal["file+dir", "file", "off"] = "file"
    fast_reactor: bool = True
    tls: TlsConfig = Field(default_factory=TlsConfig)
    #: Seconds a connection may take to send its A-ASSOCIATE-RQ (dcmtk's ARTIM timer) before it is closed.
    association_timeout_s: float = Field(default=10.0, gt=0)
    #: Connections from one host that have not (yet) completed association negotiation.
    max_pending_per_host: int = Field(default=8, ge=1)
    #: Connections not yet associated, from all hosts together.
    max_pending: int = Field(default=128, ge=1)
    #: Largest inflated size (MiB) of a deflated data set (larger ones get ``0xA700``), and of one
    #: message's data set held in memory (larger ones abort the association).
    max_inflated_mb: int = Field(default=2048, ge=1)
    #: Free space (MiB) kept on the spool's file system: below it new instances get ``0xA700``.
    min_free_mb: int = Field(default=512, ge=0)


class ApiConfig(_Section):
    """``[api]``: the REST API."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    token: str | None = None
    token_file: LaxPath | None = None

    def resolve_token(self) -> str | None:
        """Return the bearer token (from ``token`` or the first line of ``token_file``).

        Raises
        ------
        ConfigError
            If ``token_file`` cannot be read or is empty.
        """
        if self.token:
            return self.token
        if self.token_file is None:
            return None
        try:
            text = self.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"config key 'api.token_file': cannot read {str(self.token_file)!r} ({exc}).") from exc
        if not text:
            raise ConfigError(f"config key 'api.token_file': {str(self.token_file)!r} is empty.")
        return text


class TrackerConfig(_Section):
    """``[tracker]``: when a study counts as complete."""

    stable_after_s: float = Field(default=60.0, gt=0)
    poll_interval_s: float = Field(default=1.0, gt=0)


class WorkersConfig(_Section):
    """``[workers]``: the job queue's worker processes."""

    count: int = Field(default=1, ge=1, le=64)
    max_attempts: int = Field(default=2, ge=1)
    timeout_s: float = Field(default=3600.0, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Devices of the warm worker processes, one process each (``"cpu"``, ``"cuda:0"``, ``"cuda:1"``, …);
    #: empty: ``count`` processes on ``device``.
    devices: list[str] = Field(default_factory=list)
    #: A warm worker is replaced (between jobs, never mid-job) after this many jobs …
    max_jobs_per_worker: int = Field(default=200, ge=1)
    #: … or when its resident memory is above this (MiB; 0 = no limit).
    max_rss_mb: int = Field(default=0, ge=0)
    #: Memory the warm models of one worker may hold (MiB); the least recently used are dropped beyond it.
    model_cache_mb: int = Field(default=4096, ge=0)


class ExportConfig(_Section):
    """``[export]``: retries of result delivery."""

    max_attempts: int = Field(default=6, ge=1)
    backoff_initial_s: float = Field(default=2.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)
    #: Hold results in ``awaiting_review`` until an operator approves them in the console (issue 21).
    require_approval: bool = False


class ScaleConfig(_Section):
    """``[scale]``: where the model work runs (issue 17).

    ``engine = "local"`` (the embedded default): the node's own warm worker pool and SQLite queue, no broker.
    ``engine = "celery"``: jobs go to Celery workers (``mrinode worker``) through ``broker_url``.
    """

    engine: Literal["local", "celery"] = "local"
    #: The broker: RabbitMQ (``amqp://user:pass@host:5672/vhost``) or Redis (``redis://host:6379/0``).
    broker_url: str | None = None
    #: Celery's result backend (``rpc://``, ``redis://…``); optional: results reach the node over its API.
    result_backend: str | None = None
    #: Names of ``[[pipelines]]`` that need a GPU: a job with any of them enabled goes to the ``gpu`` queue,
    #: every other job to ``cpu`` (a CPU-only worker never takes a GPU model's job).
    gpu_pipelines: list[str] = Field(default_factory=list)
    #: Seconds a broker may wait for the ack of a delivered job (RabbitMQ ``consumer_timeout``, Redis
    #: ``visibility_timeout``): above ``workers.timeout_s``, the longest job.
    consumer_timeout_s: float = Field(default=7200.0, gt=0)
    #: Runs of one job's task: a failed run is retried with backoff, a lost worker's job redelivered;
    #: beyond this the job fails and its message goes to the dead-letter queue.
    max_attempts: int = Field(default=3, ge=1)
    backoff_initial_s: float = Field(default=5.0, ge=0)
    backoff_max_s: float = Field(default=300.0, ge=0)
    #: The queue that keeps the messages of jobs given up (RabbitMQ dead-letter exchange of the same name);
    #: the same on the node and every worker (it is an argument of the gpu/cpu queues).
    dead_letter_queue: str = Field(default="mrinode.dead", min_length=1)
    # ---- worker side (``mrinode worker``)
    #: How a worker gets a study: ``dicomweb`` (WADO-RS from the node's API) or ``shared`` (read the
    #: node's spool mounted at ``shared_spool_dir``).
    data_access: Literal["dicomweb", "shared"] = "dicomweb"
    shared_spool_dir: LaxPath | None = None
    #: The node's REST API as a worker reaches it (``http://node:8000``); results are uploaded there.
    node_url: str | None = None
    #: The node's API token for workers (default: ``api.token`` / ``api.token_file`` of the same file).
    node_token: str | None = None
    node_token_file: LaxPath | None = None
    #: A worker's scratch folder (fetched studies, results before upload), relative to its working directory.
    work_dir: LaxPath = Path("./mrinode-worker")
    #: Seconds one HTTP call of a worker to the node may take.
    http_timeout_s: float = Field(default=120.0, gt=0)

    @field_validator("broker_url", "result_backend")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        schemes = ("amqp://", "amqps://", "pyamqp://", "redis://", "rediss://", "rpc://", "memory://")
        if v is not None and not v.startswith(schemes):
            raise ValueError(f"{v.split('://')[0]!r} is not a broker scheme: use amqp://… (RabbitMQ) or redis://…")
        return v

    @field_validator("node_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL of the node's REST API")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _engine(self) -> ScaleConfig:
        if self.engine == "celery" and not self.broker_url:
            raise KeyedValueError("broker_url", "engine = 'celery' needs the broker's URL (amqp://… or redis://…)")
        if self.data_access == "shared" and self.shared_spool_dir is None:
            raise KeyedValueError("shared_spool_dir", "data_access = 'shared' needs the folder where the node's "
                                                      "spool is mounted on the worker")
        return self


class ConsoleConfig(_Section):
    """``[console]``: the operator's web console served on the REST API's port (issue 21)."""

    enabled: bool = True
    #: Orthanc's REST root (e.g. ``http://127.0.0.1:8042``) whose routing plugin answers
    #: ``/mrinode/decisions``; empty: the console has no routing page.
    orthanc_url: str = ""
    #: Credentials for ``orthanc_url`` (``username``/``password`` or ``token``).
    orthanc_auth: DestinationAuth | None = None


JobEvent = Literal["done", "failed", "awaiting_review"]
JOB_EVENTS: tuple[JobEvent, ...] = ("done", "failed", "awaiting_review")


class WebhookConfig(_Section):
    """``[[notifications.webhooks]]``: a JSON POST on job events, signed with an HMAC secret (issue 21)."""

    url: str = Field(min_length=1)
    secret: str | None = None
    events: list[JobEvent] = Field(default_factory=lambda: list(JOB_EVENTS))


_MAIL_EVENTS: tuple[JobEvent, ...] = ("failed", "awaiting_review")


class EmailConfig(_Section):
    """``[notifications.email]``: a plain-text e-mail through SMTP on job events (optional)."""

    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    #: Upgrade the connection with STARTTLS before logging in (port 587).
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    from_addr: str = Field(min_length=3)
    to: list[str] = Field(min_length=1)
    events: list[JobEvent] = Field(default_factory=lambda: list(_MAIL_EVENTS))


class NotificationsConfig(_Section):
    """``[notifications]``: who hears about finished, failed and held jobs (issue 21)."""

    webhooks: list[WebhookConfig] = Field(default_factory=list)
    email: EmailConfig | None = None
    #: Attempts per event and webhook before it is given up (logged and audited).
    max_attempts: int = Field(default=4, ge=1, le=20)
    #: Delay before the second attempt, doubled each time.
    backoff_initial_s: float = Field(default=1.0, gt=0)
    #: Network timeout of one POST, in seconds.
    timeout_s: float = Field(default=5.0, gt=0)


class DestinationAuth(_Section):
    """``[destinations.auth]``: credentials for a DICOMweb destination."""

    username: str | None = None
    password: str | None = None
    token: str | None = None


class _Destination(_Section):
    """What every ``[[destinations]]`` entry has; each kind adds its own keys.

    A kind is registered here and nowhere else: a subclass with ``kind`` (a one-value
    ``Literal``) and ``sender`` (``"module:function"``, called by
    :func:`dicom_node.export.deliver` as ``send(dest, paths, calling_ae=..., timeout_s=...)``
    and returning the SOP Instance UIDs delivered), listed in :data:`DESTINATION_KINDS`
    and in the :data:`DestinationConfig` union.
    """

    name: str = Field(min_length=1)
    sender: ClassVar[str]

    @property
    def address(self) -> str:
        """Where it delivers, for messages (no credentials)."""
        raise NotImplementedError


class DicomDestination(_Destination):
    """``kind = "dicom"`` (the default): C-STORE to an AE."""

    kind: Literal["dicom"] = "dicom"
    ae_title: str
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    sender: ClassVar[str] = "dicom_node.export:send_dicom"

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return _check_ae(v)

    @property
    def address(self) -> str:
        """``AE@host:port``."""
        return f"{self.ae_title}@{self.host}:{self.port}"


class DicomWebDestination(_Destination):
    """``kind = "dicomweb"``: STOW-RS to a DICOMweb studies endpoint."""

    kind: Literal["dicomweb"]
    url: str = Field(min_length=1, description="the STOW-RS studies endpoint")
    auth: DestinationAuth | None = None
    sender: ClassVar[str] = "dicom_node.export:send_dicomweb"

    @property
    def address(self) -> str:
        """The endpoint URL."""
        return self.url


#: Destination kind -> its typed configuration (the one registry of kinds).
DESTINATION_KINDS: dict[str, type[_Destination]] = {"dicom": DicomDestination, "dicomweb": DicomWebDestination}

_KIND_TAG = TAG_PREFIX  # prefix of the union tags, left out of error messages by the config loader


def _destination_tag(value: Any) -> str | None:
    kind = value.get("kind", "dicom") if isinstance(value, dict) else getattr(value, "kind", None)
    return f"{_KIND_TAG}{kind}" if kind in DESTINATION_KINDS else None


def _known_kind(value: Any) -> Any:
    if isinstance(value, dict):
        kind = value.get("kind", "dicom")
        if kind not in DESTINATION_KINDS:
            raise ValueError(f"kind {kind!r} is not a destination kind (known: {', '.join(DESTINATION_KINDS)})")
    return value


#: One ``[[destinations]]`` entry, typed by its ``kind``.
DestinationConfig = Annotated[
    Annotated[DicomDestination, Tag(f"{_KIND_TAG}dicom")] | Annotated[DicomWebDestination, Tag(f"{_KIND_TAG}dicomweb")],
    Discriminator(_destination_tag),
    BeforeValidator(_known_kind),
]


class RoutingConfig(_Section):
    """``[routing]``: where results go."""

    default_destinations: list[str] = Field(default_factory=list)
    also_send_to: list[str] = Field(default_factory=list)


class PipelineConfig(_Section):
    """One ``[[pipelines]]`` entry."""

    name: str = Field(min_length=1)
    function: str
    enabled: bool = True
    required_sequences: list[str] = Field(default_factory=list)
    optional_sequences: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("function")
    @classmethod
    def _reference(cls, v: str) -> str:
        module, sep, attr = v.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"{v!r} must look like 'package.module:function'")
        return v

    @field_validator("required_sequences", "optional_sequences")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        return [parse_sequence_label(x).value for x in v]


class LoggingConfig(_Section):
    """``[logging]``."""

    level: str = "INFO"
    audit_log: LaxPath = Path("audit.jsonl")


class NodeConfig(_Section):
    """The whole configuration file."""

    node: NodeSection = Field(default_factory=NodeSection)
    dicom: DicomConfig = Field(default_factory=DicomConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    pipelines: list[PipelineConfig] = Field(default_factory=list)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)

    @model_validator(mode="after")
    def _cross(self) -> NodeConfig:
        names = [d.name for d in self.destinations]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise KeyedValueError("destinations", f"destination names must be unique; repeated: {', '.join(dup)}")
        for key in ("default_destinations", "also_send_to"):
            for n in getattr(self.routing, key):
                if n not in names:
                    raise KeyedValueError(f"routing.{key}", f"names {n!r}, which is not a "
                                          f"[[destinations]] name (known: {', '.join(names) or 'none'})")
        pnames = [p.name for p in self.pipelines]
        pdup = sorted({n for n in pnames if pnames.count(n) > 1})
        if pdup:
            raise KeyedValueError("pipelines", f"pipeline names must be unique; repeated: {', '.join(pdup)}")
        return self

    # ---------------------------------------------------------------- paths
    @property
    def spool_dir(self) -> Path:
        """Where received instances are kept."""
        return self.node.data_dir / "spool"

    @property
    def results_dir(self) -> Path:
        """Where pipeline results are kept (per job)."""
        return self.node.data_dir / "results"

    @property
    def db_path(self) -> Path:
        """The SQLite store database."""
        return self.node.data_dir / "node.db"

    @property
    def audit_log_path(self) -> Path:
        """The append-only audit log (JSON lines)."""
        p = self.logging.audit_log
        return p if p.is_absolute() else self.node.data_dir / p

    def destination(self, name: str) -> DestinationConfig:
        """Return the destination called ``name``.

        Raises
        ------
        KeyError
            If there is none.
        """
        for d in self.destinations:
            if d.name == name:
                return d
        raise KeyError(f"no destination named {name!r}")

    def destinations_for(self, calling_ae: str | None) -> list[DestinationConfig]:
        """Return where results of a study sent by ``calling_ae`` go.

        ``routing.default_destinations`` when set; otherwise every ``dicom`` destination
        whose AE title equals the calling AE; plus ``routing.also_send_to``.
        """
        if self.routing.default_destinations:
            chosen = [self.destination(n) for n in self.routing.default_destinations]
        else:
            chosen = [d for d in self.destinations
                      if isinstance(d, DicomDestination) and calling_ae and d.ae_title == calling_ae]
        for n in self.routing.also_send_to:
            d = self.destination(n)
            if d not in chosen:
                chosen.append(d)
        return chosen


