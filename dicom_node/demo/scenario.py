"""One study through the whole loop: synthetic study → storescu → Orthanc → plugin → node
→ SEG + SR back in Orthanc, with the time of every stage.

Used by the demo (``python -m dicom_node.demo run``), ``bench/e2e.py`` and the e2e tests.
The functions here talk to Orthanc's REST API through ``orthanc-api-client`` (proxies
ignored; :func:`wait_http` alone probes any HTTP service with ``httpx``) and to dcmtk
through its command line; they must run where Orthanc is reachable on loopback (inside
the demo's network namespace).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dicom_node.dcmtk import find_tool

__all__ = [
    "LoopTimes",
    "OrthancClient",
    "copy_study",
    "model_seconds",
    "pipeline_breakdown",
    "send_with_storescu",
    "stage_table",
    "synth_study",
    "wait_for_results",
    "wait_http",
]


class OrthancClient:
    """Orthanc's REST API through ``orthanc-api-client`` (basic auth, environment proxies ignored).

    Parameters
    ----------
    url : str
        For example ``http://127.0.0.1:8042``.
    user, password : str
        Orthanc's registered user.
    """

    def __init__(self, url: str, user: str, password: str) -> None:
        from orthanc_api_client import OrthancApiClient

        self.url = url.rstrip("/")
        self.api = OrthancApiClient(self.url, user=user, pwd=password)
        self.api._http_session.trust_env = False

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET JSON (raises :class:`orthanc_api_client.HttpError` on HTTP errors)."""
        return self.api.get_json(path, **kwargs)

    def find_study(self, study_uid: str) -> str | None:
        """Orthanc's id of a study, by Study Instance UID."""
        found = self.api.lookup(study_uid, filter="Study")
        return str(found[0]) if found else None

    def series_by_modality(self, study_id: str) -> dict[str, list[dict[str, Any]]]:
        """The study's series grouped by Modality."""
        out: dict[str, list[dict[str, Any]]] = {}
        for s in self.get(f"/studies/{study_id}/series"):
            out.setdefault(s["MainDicomTags"].get("Modality", ""), []).append(s)
        return out

    def instance_file(self, instance_id: str) -> bytes:
        """The DICOM file of one instance."""
        data: bytes = self.api.instances.get_file(instance_id)
        return data

    def close(self) -> None:
        """Close the connection pool."""
        self.api.close()


def wait_http(url: str, timeout: float, *, auth: tuple[str, str] | None = None, what: str) -> None:
    """Wait until ``url`` answers 200.

    Raises
    ------
    TimeoutError
        After ``timeout`` seconds, naming ``what``.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, auth=auth, timeout=2.0, trust_env=False)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not answer at {url} within {timeout:.0f} s (last: {last}).")


def synth_study(out: Path, *, seed: int, sequences: str = "T1,T1C,T2,FLAIR") -> Path:
    """Generate one synthetic subject with a tumour as DICOM (``mrinode synth``).

    Returns
    -------
    Path
        The subject's ``dicom`` folder (one sub-folder per series).

    Raises
    ------
    RuntimeError
        If ``mrinode synth`` fails (its last output lines are in the message).
    """
    cmd = [
        sys.executable, "-m", "dicom_node", "synth", "--out", str(out), "--subjects", "1", "--seed", str(seed),
        "--dicom", "--no-nifti", "--tumour-free-fraction", "0", "--sequences", sequences, "--threads", "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"mrinode synth failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}")
    folders = sorted(out.glob("*/dicom"))
    if not folders:
        raise RuntimeError(f"mrinode synth wrote no DICOM folder under {out}.")
    return folders[-1]


def send_with_storescu(folder: Path, port: int, *, calling: str = "STORESCU", called: str = "ORTHANC") -> int:
    """Send every file under ``folder`` with dcmtk ``storescu`` over one association.

    Returns
    -------
    int
        The number of files sent.

    Raises
    ------
    RuntimeError
        If storescu is missing or reports a failure.
    """
    exe = find_tool("storescu")
    if exe is None:
        raise RuntimeError("dcmtk storescu is not installed; run `make setup`.")
    files = sorted(str(p) for p in folder.rglob("*.dcm"))
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    proc = subprocess.run(
        [exe, "-aet", calling, "-aec", called, "127.0.0.1", str(port), *files],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"storescu to 127.0.0.1:{port} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return len(files)


def copy_study(src: Path, dst: Path, *, series: tuple[str, ...] | None = None) -> tuple[str, list[Path]]:
    """Copy a DICOM study folder with new Study, Series, SOP Instance and Frame of
    Reference UIDs (another visit, as far as Orthanc and the node can tell).

    Parameters
    ----------
    src, dst : Path
        Source study folder (one sub-folder per series) and destination.
    series : tuple of str, optional
        Keep only the series sub-folders whose name contains one of these strings.

    Returns
    -------
    tuple
        The new Study Instance UID and the written files.
    """
    import pydicom
    from pydicom.uid import generate_uid

    study_uid = str(generate_uid())
    mapping: dict[str, str] = {}
    written: list[Path] = []
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        if series is not None and not any(s in folder.name for s in series):
            continue
        for path in sorted(folder.glob("*.dcm")):
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID = study_uid
            for kw in ("SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
                if kw in ds:
                    old = str(ds[kw].value)
                    setattr(ds, kw, mapping.setdefault(old, str(generate_uid())))
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            out = dst / folder.name / path.name
            out.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(out, enforce_file_format=True)
            written.append(out)
    return study_uid, written


@dataclass
class LoopTimes:
    """Wall-clock marks (``time.time()``) of one study's trip, and what came back."""

    study_uid: str
    study_id: str = ""
    sent_start: float = 0.0
    stored: float = 0.0
    routed: float = 0.0
    sent_to_node: float = 0.0
    job: dict[str, Any] = field(default_factory=dict)
    seg_in: float = 0.0
    sr_in: float = 0.0
    result_series: dict[str, list[str]] = field(default_factory=dict)

    @property
    def done(self) -> float:
        """When the last of SEG and SR was in Orthanc."""
        return max(self.seg_in, self.sr_in)


def wait_for_results(
    orthanc: OrthancClient, times: LoopTimes, *, timeout: float, need_seg: bool = True, poll: float = 0.25
) -> LoopTimes:
    """Poll Orthanc until the node's SR (and SEG, when ``need_seg``) are in the study.

    Fills ``times`` from Orthanc, the plugin's ``/mrinode/studies/{id}`` view and the
    node's job (proxied by the plugin).

    Raises
    ------
    TimeoutError
        With what was and was not seen, and the plugin's view of the study.
    """
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    checked = time.monotonic()
    while time.monotonic() < deadline:
        if not times.study_id:
            times.study_id = orthanc.find_study(times.study_uid) or ""
        if times.study_id and time.monotonic() - checked > 2.0:
            checked = time.monotonic()
            _raise_if_failed(orthanc.get(f"/mrinode/studies/{times.study_id}"))
        if times.study_id:
            by_mod = orthanc.series_by_modality(times.study_id)
            now = time.time()
            if by_mod.get("SEG") and not times.seg_in:
                times.seg_in = now
            if by_mod.get("SR") and not times.sr_in:
                times.sr_in = now
            if times.sr_in and (times.seg_in or not need_seg):
                times.result_series = {m: [s["ID"] for s in by_mod.get(m, [])] for m in ("SEG", "SR")}
                # The node marks its job done just after Orthanc stored the last object.
                settle = time.monotonic() + 10.0
                while True:
                    view = orthanc.get(f"/mrinode/studies/{times.study_id}")
                    _fill_from_plugin(times, view)
                    if times.job.get("state") == "done" or time.monotonic() > settle:
                        return times
                    time.sleep(poll)
        time.sleep(poll)
    if times.study_id:
        view = orthanc.get(f"/mrinode/studies/{times.study_id}")
    raise TimeoutError(
        f"no {'SEG and ' if need_seg else ''}SR came back within {timeout:.0f} s for study "
        f"{times.study_id or '(not in Orthanc)'}; plugin view: {str(view)[:1500]}"
    )


def _raise_if_failed(view: dict[str, Any]) -> None:
    """Stop waiting as soon as the node's job for the study has failed."""
    for name, jobs in view.get("node_jobs", {}).items():
        for job in jobs if isinstance(jobs, list) else []:
            if job.get("state") == "failed":
                raise RuntimeError(f"the node {name!r} failed job {job.get('id')}: {job.get('last_error')}")


def _fill_from_plugin(times: LoopTimes, view: dict[str, Any]) -> None:
    sends = [d for d in view.get("decisions", []) if d.get("action") == "send"]
    if sends:
        times.routed = float(sends[0].get("time", 0.0))
    ok = [s for s in view.get("state", {}).get("sends", []) if s.get("ok")]
    if ok:
        times.sent_to_node = float(ok[0].get("finished", 0.0))
    for jobs in view.get("node_jobs", {}).values():
        if isinstance(jobs, list) and jobs:
            times.job = max(jobs, key=lambda j: j.get("id", 0))


def stage_table(times: LoopTimes) -> list[tuple[str, float]]:
    """Seconds per stage, from the last instance stored in Orthanc to SEG and SR stored.

    Returns
    -------
    list of (str, float)
        Stage name and seconds; the last row is the total.
    """
    job = times.job
    durations = job.get("durations") or {}
    started = float(job.get("started_at") or times.sent_to_node or times.routed)
    pipeline = float(durations.get("pipeline_s", 0.0))
    rows = [
        ("Orthanc + plugin: wait until the study is complete (quiet period or StableAge)", times.routed - times.stored),
        ("plugin: C-STORE to node + complete call", times.sent_to_node - times.routed),
        ("node: queue wait", max(0.0, started - times.sent_to_node)),
        ("node: pipeline (identify, model, SEG + SR)", pipeline),
        ("node: export to Orthanc, Orthanc stores", max(0.0, times.done - started - pipeline)),
    ]
    rows.append(("total: last instance stored -> SEG + SR stored", times.done - times.stored))
    return rows


def pipeline_breakdown(times: LoopTimes) -> list[tuple[str, float]]:
    """The pipeline's own stages (identify, read, resample, model_*, write) in seconds,
    plus what the worker spent around them (process start, imports, model loading)."""
    rows: list[tuple[str, float]] = []
    for summary in (times.job.get("summary") or {}).values():
        if isinstance(summary, dict):
            rows += [(str(k), float(v)) for k, v in (summary.get("seconds") or {}).items()]
    pipeline = float((times.job.get("durations") or {}).get("pipeline_s", 0.0))
    if rows and pipeline:
        rows.append(("worker (outside the stages; imports and model load when cold)", max(0.0, pipeline - sum(v for _, v in rows))))
    return rows


def model_seconds(times: LoopTimes) -> float:
    """Seconds the model itself took (the pipeline's ``model_*`` stages), 0 if unknown."""
    total = 0.0
    for summary in (times.job.get("summary") or {}).values():
        if isinstance(summary, dict):
            total += sum(float(v) for k, v in (summary.get("seconds") or {}).items() if str(k).startswith("model"))
    return total
