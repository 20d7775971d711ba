"""The demo's printed summary: series and sequences, segment volumes, seconds per stage,
where to look (Orthanc URLs), and the overlay PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dicom_node.demo.report import overlay_png, seg_volumes, sr_text_rows
from dicom_node.demo.scenario import LoopTimes, OrthancClient, model_seconds, pipeline_breakdown, stage_table

__all__ = ["print_summary", "sequences_from_summary"]


#: SR lines worth printing (the rest repeats algorithm and context).
_SR_KEYS: tuple[str, ...] = (
    "Device Observer Name", "Finding:", "Volume:", "Identified MR sequence", "Tracking Identifier: Series",
    "Analysis status", "Comment:", "Segment summary",
)


def sequences_from_summary(summary: Any) -> dict[str, str]:
    """Find ``{series UID or description: sequence label}`` in a job summary, wherever a
    pipeline put it (a ``sequences`` mapping or a list of ``{series_uid, label}`` rows)."""
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("sequences", "identification", "series") and isinstance(value, dict):
                    found.update({str(k): str(v.get("label", v) if isinstance(v, dict) else v) for k, v in value.items()})
                elif key in ("sequences", "identification", "series") and isinstance(value, list):
                    for row in value:
                        if isinstance(row, dict) and ("label" in row or "sequence" in row):
                            ident = row.get("series_uid") or row.get("description") or row.get("series")
                            found[str(ident)] = str(row.get("label", row.get("sequence")))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(summary)
    # The tumour pipeline reports {label: series description} as "sequences_found".
    if isinstance(summary, dict):
        for pipeline in summary.values():
            if isinstance(pipeline, dict) and isinstance(pipeline.get("sequences_found"), dict):
                found.update({str(desc): str(label) for label, desc in pipeline["sequences_found"].items()})
    return found


def _first_file(orthanc: OrthancClient, series: dict[str, Any]) -> bytes:
    return orthanc.instance_file(series["Instances"][0])


def print_summary(orthanc: OrthancClient, times: LoopTimes, folder: Path, png: Path, svc: dict[str, Any]) -> None:
    """Print what came back and how long each stage took; write the overlay PNG.

    Parameters
    ----------
    orthanc : OrthancClient
        The demo PACS.
    times : LoopTimes
        The study's trip (filled by :func:`~dicom_node.demo.scenario.wait_for_results`).
    folder : Path
        The synthetic study on disk (for the FLAIR under the overlay).
    png : Path
        Where to write the overlay.
    svc : dict
        Ports, credentials and namespace of the running demo.
    """
    by_mod = orthanc.series_by_modality(times.study_id)
    labels = sequences_from_summary(times.job.get("summary", {}))
    print("\n=== mrinode demo: results ===")
    print("Series sent by the scanner, and the sequence the node identified:")
    for s in sorted(by_mod.get("MR", []), key=lambda s: int(s["MainDicomTags"].get("SeriesNumber") or 0)):
        tags = s["MainDicomTags"]
        desc = tags.get("SeriesDescription", "")
        label = labels.get(tags.get("SeriesInstanceUID", ""), labels.get(desc, "(see SR)"))
        print(f"  #{tags.get('SeriesNumber', '?'):>3}  {desc:<32} {len(s['Instances']):>4} images  -> {label}")
    for seg in by_mod.get("SEG", []):
        data = _first_file(orthanc, seg)
        print(f"Segmentation ({seg['MainDicomTags'].get('SeriesDescription', 'SEG')}), volumes read back from the SEG:")
        for v in seg_volumes(data):
            print(f"  segment {v.number}  {v.label:<36} {v.ml:8.2f} mL")
        flair = sorted(p for d in folder.iterdir() if d.is_dir() and "FLAIR" in d.name.upper() for p in d.glob("*.dcm"))
        if flair:
            note = overlay_png(data, flair, png)
            print(f"Overlay PNG: {png}  ({note})")
        break
    for sr in by_mod.get("SR", []):
        print(f"Structured report ({sr['MainDicomTags'].get('SeriesDescription', 'SR')}), main lines:")
        for row in sr_text_rows(_first_file(orthanc, sr), limit=400):
            if any(key in row for key in _SR_KEYS):
                print(f"  {row.strip()}")
    print("Seconds per stage (from the last instance stored in Orthanc):")
    rows = stage_table(times)
    for name, seconds in rows:
        print(f"  {name:<52} {seconds:8.1f} s")
    for name, seconds in pipeline_breakdown(times):
        print(f"    {'pipeline: ' + name:<50} {seconds:8.1f} s")
    model = model_seconds(times)
    total = rows[-1][1]
    if model > 0 and total > 0:
        print(f"  {'of which the model itself':<52} {model:8.1f} s  ({100 * (1 - model / total):.0f}% of the total is outside the model)")
    job = times.job
    if job:
        print(f"Node job {job.get('id')}: state {job.get('state')}, durations {job.get('durations')}")
    port = svc["http_port"]
    print("Where to look:")
    print(f"  Orthanc Explorer: http://127.0.0.1:{port}/app/explorer.html#study?uuid={times.study_id}"
          f"  (user {svc['user']}, password {svc['password']})")
    print(f"  DICOMweb:         http://127.0.0.1:{port}/dicom-web/studies/{times.study_uid}/series")
    print(f"  Routing:          http://127.0.0.1:{port}/mrinode/studies/{times.study_id}")
    if svc.get("node_url"):
        token = f"  (sign in with the API token {svc['node_token']!r})" if svc.get("node_token") else ""
        print(f"  Node console:     {svc['node_url']}/console/jobs/{job.get('id') if job else ''}{token}")
    if svc.get("netns") and port not in svc.get("forwarded", []):
        print(f"  (127.0.0.1:{port} was taken on this machine, so it is NOT forwarded: the links above reach")
        print(f"   whatever else listens there; use: sudo ip netns exec {svc['netns']} curl -u {svc['user']}:"
              f"{svc['password']} http://127.0.0.1:{port}/studies)")
    elif svc.get("netns"):
        print(f"  (the services run in network namespace {svc['netns']!r}; 127.0.0.1:{port} is forwarded into it;")
        print(f"   directly: sudo ip netns exec {svc['netns']} curl -u {svc['user']}:{svc['password']} "
              f"http://127.0.0.1:{port}/studies)")
    print("The services keep running; stop them with `make demo-stop`.")
