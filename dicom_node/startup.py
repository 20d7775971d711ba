"""Start-up checks: what ``mrinode serve`` and ``mrinode check`` verify before the node listens.

:func:`run_checks` returns a :class:`CheckReport`: *errors* stop the node (each one a
sentence naming the configuration key, and the bundle or module at fault), *warnings*
are logged and the node starts anyway.

- every enabled pipeline's function imports (in a child Python process, so that the
  receive process never imports what a pipeline brings, e.g. torch) and is callable;
- every model bundle an enabled pipeline names loads: card valid, weights' SHA-256 as the
  card says (:func:`models.registry.check_bundle`, JSON and hashing only);
- every destination answers: C-ECHO for ``dicom`` destinations (pynetdicom), an HTTP
  request for ``dicomweb`` ones (a warning when it does not, never a refusal: the PACS may
  come up after the node, and export retries);
- routing can deliver somewhere: results of enabled pipelines have at least one
  destination (a warning otherwise, naming the callers whose results would have none);
- the files the configuration names can be read: TLS certificate, key and CA when TLS is
  on (and parse as PEM), the API token file.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dicom_node.config import NodeConfig
    from dicom_node.config_models import DicomDestination, DicomWebDestination

__all__ = ["CheckReport", "check_bundles", "check_destinations", "check_files", "check_imports", "check_routing",
           "echo_destination", "run_checks"]

log = logging.getLogger(__name__)

#: Seconds a destination has to answer the start-up check.
REACH_TIMEOUT_S = 3.0


@dataclass
class CheckReport:
    """What the start-up checks found.

    Attributes
    ----------
    errors : list of str
        Sentences naming the key at fault; the node does not start while there is one.
    warnings : list of str
        Sentences the node logs before it starts anyway.
    passed : list of str
        What was checked and found good (for ``mrinode check``).
    """

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the node may start."""
        return not self.errors


def _pipeline_key(i: int, name: str) -> str:
    return f"pipelines[{i}] ({name})"


_IMPORT_PROBE = r"""
import importlib, json, sys, traceback
out = {}
for ref in sys.argv[1:]:
    module, _, attr = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr, None)
        out[ref] = None if callable(fn) else f"module {module!r} has no callable {attr!r}"
    except BaseException as exc:
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        out[ref] = f"importing module {module!r} failed: {last}"
print("MRINODE-PROBE " + json.dumps(out))
"""


def check_imports(cfg: NodeConfig, report: CheckReport) -> None:
    """Import every enabled pipeline's function in a child process; errors name the key.

    Parameters
    ----------
    cfg : NodeConfig
        The configuration.
    report : CheckReport
        Receives errors and passes.
    """
    enabled = [(i, p) for i, p in enumerate(cfg.pipelines) if p.enabled]
    if not enabled:
        return
    refs = sorted({p.function for _, p in enabled})
    try:
        proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, *refs], capture_output=True, text=True,
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        report.errors.append(f"cannot check the pipelines' imports ({exc}).")
        return
    line = next((x for x in proc.stdout.splitlines() if x.startswith("MRINODE-PROBE ")), None)
    if line is None:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        report.errors.append(f"cannot check the pipelines' imports: the probe process ended with {proc.returncode}: "
                             f"{tail}")
        return
    found: dict[str, str | None] = json.loads(line.removeprefix("MRINODE-PROBE "))
    for i, p in enabled:
        why = found.get(p.function)
        if why:
            report.errors.append(f"config key '{_pipeline_key(i, p.name)}.function': {p.function!r}: {why}; fix the "
                                 "reference or set enabled = false.")
        else:
            report.passed.append(f"pipeline {p.name!r}: {p.function} imports")


def check_bundles(cfg: NodeConfig, report: CheckReport) -> None:
    """Load the card and hash the weights of every bundle an enabled pipeline names.

    Parameters
    ----------
    cfg : NodeConfig
        The configuration.
    report : CheckReport
        Receives errors naming ``pipelines[i] (name).options.model`` and the bundle.
    """
    for i, p in enumerate(cfg.pipelines):
        model = p.options.get("model")
        if not p.enabled or not model:
            continue
        from models.bundle import BundleError
        from models.registry import check_bundle

        search = [p.options["models_dir"]] if p.options.get("models_dir") else None
        try:
            check_bundle(str(model), search)
        except BundleError as exc:
            report.errors.append(f"config key '{_pipeline_key(i, p.name)}.options.model': model bundle {str(model)!r} "
                                 f"does not load: {exc}")
        else:
            report.passed.append(f"pipeline {p.name!r}: bundle {model!r} loads (card, weights' SHA-256)")


def echo_destination(dest: DicomDestination | DicomWebDestination, *, calling_ae: str,
                     timeout_s: float = REACH_TIMEOUT_S) -> str | None:
    """Ask a destination whether it answers: C-ECHO (``dicom``) or an HTTP request (``dicomweb``).

    Parameters
    ----------
    dest : DicomDestination or DicomWebDestination
        The destination.
    calling_ae : str
        This node's AE title.
    timeout_s : float
        Connection and answer timeout.

    Returns
    -------
    str or None
        ``None`` when it answered, else why not (a sentence without credentials).
    """
    from dicom_node.config_models import DicomDestination

    if isinstance(dest, DicomDestination):
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
        ae.connection_timeout = timeout_s
        ae.add_requested_context(Verification)
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        if not assoc.is_established:
            return (f"C-ECHO to {dest.address}: association {'rejected' if assoc.is_rejected else 'failed'} "
                    f"(is it running, and does it know the AE title {calling_ae!r}?)")
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        code = int(getattr(status, "Status", -1)) if status else -1
        return None if code == 0 else f"C-ECHO to {dest.address} answered {code:#06x}"
    import httpx

    headers = {"Accept": "application/dicom+json"}
    auth: tuple[str, str] | None = None
    if dest.auth is not None:
        if dest.auth.token:
            headers["Authorization"] = f"Bearer {dest.auth.token}"
        elif dest.auth.username is not None:
            auth = (dest.auth.username, dest.auth.password or "")
    try:
        r = httpx.get(dest.url, params={"limit": "1"}, headers=headers, auth=auth, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"DICOMweb {dest.url}: {type(exc).__name__}: {exc}"
    if r.status_code in (401, 403):
        return f"DICOMweb {dest.url}: HTTP {r.status_code} (check [destinations.auth])"
    if r.status_code >= 500:
        return f"DICOMweb {dest.url}: HTTP {r.status_code}"
    return None


def check_destinations(cfg: NodeConfig, report: CheckReport) -> None:
    """Ask every destination whether it answers; one that does not is a warning.

    Parameters
    ----------
    cfg : NodeConfig
        The configuration.
    report : CheckReport
        Receives warnings naming ``destinations[i] (name)``.
    """
    for i, d in enumerate(cfg.destinations):
        try:
            why = echo_destination(d, calling_ae=cfg.node.ae_title)
        except (OSError, RuntimeError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        if why:
            report.warnings.append(f"config key 'destinations[{i}] ({d.name})': not reachable now: {why}; results "
                                   "for it are retried (export.max_attempts) and then the job fails.")
        else:
            report.passed.append(f"destination {d.name!r} ({d.address}) answers")


def check_routing(cfg: NodeConfig, report: CheckReport) -> None:
    """Warn when the results of enabled pipelines could go nowhere.

    Parameters
    ----------
    cfg : NodeConfig
        The configuration.
    report : CheckReport
        Receives a warning naming ``routing`` and the callers whose results have no destination.
    """
    if not any(p.enabled for p in cfg.pipelines):
        report.warnings.append("config key 'pipelines': no pipeline is enabled, so studies end 'done' without "
                               "results; enable one (e.g. the brain-tumour pipeline of deploy/node.example.toml).")
        return
    if cfg.routing.default_destinations or cfg.routing.also_send_to:
        report.passed.append("routing: every result has a destination")
        return
    if not cfg.destinations:
        report.warnings.append("config key 'routing': there is no [[destinations]] entry, so results cannot be "
                               "delivered (jobs fail after export.max_attempts; the results stay under "
                               f"{cfg.results_dir}); add the PACS as a destination.")
        return
    if cfg.dicom.allow_any_caller:
        report.passed.append("routing: results go back to the sending AE when it is a destination")
        return
    lost = [c.ae_title for c in cfg.dicom.allowed_callers if not cfg.destinations_for(c.ae_title)]
    if lost:
        report.warnings.append(f"config key 'routing.default_destinations': results of studies sent by "
                               f"{', '.join(lost)} have no destination (no dicom destination with that ae_title); "
                               "set routing.default_destinations or add the destination.")
    else:
        report.passed.append("routing: every allowed caller's results have a destination")


def check_files(cfg: NodeConfig, report: CheckReport) -> None:
    """Check that the TLS files (when TLS is on) and the API token file can be read.

    Parameters
    ----------
    cfg : NodeConfig
        The configuration (paths already resolved against the configuration file's folder).
    report : CheckReport
        Receives errors naming ``dicom.tls.cert``, ``dicom.tls.key``, ``dicom.tls.ca`` or ``api.token_file``.
    """
    from dicom_node.config import ConfigError

    tls = cfg.dicom.tls
    if tls.enabled:
        for key in ("cert", "key", "ca"):
            path = getattr(tls, key)
            if path is None:
                continue
            try:
                text = path.read_text(errors="replace")
            except OSError as exc:
                report.errors.append(f"config key 'dicom.tls.{key}': cannot read {str(path)!r} "
                                     f"({exc.strerror or exc}).")
                continue
            if "-----BEGIN " not in text:
                report.errors.append(f"config key 'dicom.tls.{key}': {str(path)!r} is not a PEM file.")
        if not any(e.startswith("config key 'dicom.tls.") for e in report.errors):
            import ssl

            try:
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                assert tls.cert is not None and tls.key is not None  # the schema requires both with TLS on
                ctx.load_cert_chain(str(tls.cert), str(tls.key))
            except (ssl.SSLError, OSError) as exc:
                report.errors.append(f"config key 'dicom.tls.cert': the certificate and key do not load together "
                                     f"({exc}).")
            else:
                report.passed.append("DICOM TLS: certificate and key load")
    try:
        cfg.api.resolve_token()
    except ConfigError as exc:
        report.errors.append(str(exc))


def run_checks(cfg: NodeConfig, *, reach: bool = True) -> CheckReport:
    """Run every start-up check.

    Parameters
    ----------
    cfg : NodeConfig
        The validated configuration.
    reach : bool
        Whether to contact the destinations (C-ECHO, HTTP).

    Returns
    -------
    CheckReport
        Errors (the node must not start), warnings and passes.
    """
    report = CheckReport()
    check_files(cfg, report)
    check_imports(cfg, report)
    check_bundles(cfg, report)
    check_routing(cfg, report)
    if reach:
        check_destinations(cfg, report)
    if cfg.scale.engine == "celery":
        from dicom_node.scale.checks import check_scale

        check_scale(cfg, report, reach=reach)
    return report
