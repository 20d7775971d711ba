"""``python -m dicom_node.demo run|stop``: the whole loop on a real PACS, on this machine.

``run`` starts Orthanc (with the mrinode plugin and DICOMweb) and the node in a private
network namespace (see :mod:`dicom_node.demo.netns` for why), generates a synthetic
4-sequence brain study, sends it into Orthanc with dcmtk ``storescu`` as a scanner would,
waits for rule → node → SEG + SR → back in Orthanc, prints a summary and writes an
overlay PNG. The services keep running (pid files and logs in ``./var/demo``) until
``stop``. ``run`` stops a previous demo first, so it can be run again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "run_demo", "start_services", "stop_demo"]

DEFAULT_NETNS = "mrinode-demo"
ORTHANC_EXE = "/usr/sbin/Orthanc"


def _root() -> Path:
    return Path(__file__).resolve().parents[2]


def _paths(args: argparse.Namespace) -> Any:
    from dicom_node.demo.services import DemoPaths

    return DemoPaths(root=_root(), var=Path(args.var).expanduser().absolute())


def stop_demo(args: argparse.Namespace) -> int:
    """Stop the demo's services and remove its network namespace.

    Returns
    -------
    int
        0 (stopping what is not running is not an error).
    """
    from dicom_node.demo.netns import delete_netns
    from dicom_node.demo.services import stop_all

    paths = _paths(args)
    lines = stop_all(paths) if paths.var.exists() else []
    for line in lines:
        print(f"demo-stop: {line}")
    if not lines:
        print("demo-stop: nothing was running.")
    if not args.no_netns:
        try:
            delete_netns(args.netns)
        except RuntimeError as exc:
            print(f"demo-stop: {exc}", file=sys.stderr)
    return 0


def _log_tail(path: Path, n: int = 25) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def start_services(paths: Any, *, netns: str | None, node_config: Path | None = None) -> dict[str, Any]:
    """Start Orthanc (plugin on), the node and the loopback forwarder; wait until they answer.

    Parameters
    ----------
    paths : DemoPaths
        The demo folders (data, logs and pid files go under ``paths.var``).
    netns : str, optional
        The network namespace to run in (created if missing; this thread enters it);
        ``None`` runs on this machine's network (Orthanc then listens on every interface).
    node_config : Path, optional
        Node configuration template (default ``deploy/demo/node.toml``).

    Returns
    -------
    dict
        ``http_port``, ``dicom_port``, ``user``, ``password``, ``netns``, ``node_url``,
        ``node_token``.

    Raises
    ------
    RuntimeError
        If something is missing or a service does not answer (with the log tails).
    """
    import shutil

    from dicom_node.demo.netns import create_netns, enter_netns
    from dicom_node.demo.scenario import wait_http
    from dicom_node.demo.services import render_node_config, render_orthanc_config, start_process

    for exe in (ORTHANC_EXE, "/usr/share/orthanc/plugins/libOrthancPython.so"):
        if not Path(exe).exists():
            raise RuntimeError(f"{exe} is missing (Debian packages orthanc, orthanc-python); run `make setup`.")
    if shutil.which("storescu") is None:
        raise RuntimeError("dcmtk storescu is missing (Debian package dcmtk); run `make setup`.")
    paths.var.mkdir(parents=True, exist_ok=True)
    for old in ("orthanc-db", "node"):
        shutil.rmtree(paths.var / old, ignore_errors=True)
    orthanc_cfg_path = render_orthanc_config(paths)
    node_cfg_path = render_node_config(paths, node_config)
    orthanc_cfg = json.loads(orthanc_cfg_path.read_text())
    node_cfg = tomllib.loads(node_cfg_path.read_text())
    if netns is not None:
        create_netns(netns)
    else:
        print("demo: WARNING --no-netns: Orthanc listens on every interface of this machine.")
    forwarded: list[int] = []
    start_process(paths, "orthanc", [ORTHANC_EXE, str(orthanc_cfg_path)], netns=netns)
    start_process(paths, "node", [sys.executable, "-m", "dicom_node", "serve", "--config", str(node_cfg_path)], netns=netns)
    http_port, dicom_port = int(orthanc_cfg["HttpPort"]), int(orthanc_cfg["DicomPort"])
    viewer_port = _start_viewer(paths, http_port, netns)
    if netns is not None:
        ready = paths.var / "forward.ready"
        ready.unlink(missing_ok=True)
        start_process(
            paths, "forward",
            [sys.executable, "-m", "dicom_node.demo", "forward", "--netns", netns, "--ready", str(ready),
             "--ports", str(http_port), str(dicom_port),
             str(int(node_cfg.get("api", {}).get("port", 8000))),  # the node's REST API and console too
             *([str(viewer_port)] if viewer_port else [])],  # the OHIF viewer
            netns=None,
        )
        deadline = time.monotonic() + 15
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        forwarded = [int(p) for p in ready.read_text().split()] if ready.exists() else []
        enter_netns(netns)  # from here on, this thread (and its children) talk inside the namespace
    user, password = next(iter(orthanc_cfg["RegisteredUsers"].items()))
    api = node_cfg.get("api", {})
    node_url = f"http://{api.get('host', '127.0.0.1')}:{int(api.get('port', 8000))}"
    try:
        wait_http(f"http://127.0.0.1:{http_port}/system", 60, auth=(user, password), what="Orthanc")
        wait_http(f"{node_url}/health", 90, what="the node")
        if viewer_port:
            wait_http(f"http://127.0.0.1:{viewer_port}/app-config.js", 30, what="the viewer")
    except TimeoutError as exc:
        raise RuntimeError(
            f"{exc}\n--- orthanc.log ---\n{_log_tail(paths.log('orthanc'))}\n--- node.log ---\n{_log_tail(paths.log('node'))}"
        ) from None
    return {"http_port": http_port, "dicom_port": dicom_port, "user": user, "password": password, "netns": netns,
            "node_url": node_url, "node_token": api.get("token"), "forwarded": forwarded,
            "viewer_url": f"http://127.0.0.1:{viewer_port}" if viewer_port else None}


def _start_viewer(paths: Any, http_port: int, netns: str | None) -> int | None:
    """Start the OHIF viewer in front of Orthanc's DICOMweb; its port, or None without the bundle."""
    from dicom_node.demo.services import start_process
    from dicom_node.viewer import DEFAULT_PORT, default_dist

    if not (default_dist() / "index.html").is_file():
        print(f"demo: WARNING the OHIF viewer is not in {default_dist()}; run `make viewer` to have it.")
        return None
    start_process(paths, "viewer", [sys.executable, "-m", "dicom_node.viewer", "serve", "--pacs-url",
                                    f"http://127.0.0.1:{http_port}", "--port", str(DEFAULT_PORT)], netns=netns)
    return DEFAULT_PORT


def _study_folder(args: argparse.Namespace, paths: Any) -> Path:
    """The synthetic study: reuse the one from a previous run with the same seed."""
    import shutil

    from dicom_node.demo.scenario import synth_study

    if args.study:
        return Path(args.study).expanduser().absolute()
    out = paths.var / f"study-seed{args.seed}"
    done = out / ".complete"
    if done.exists():
        return Path(done.read_text().strip())
    shutil.rmtree(out, ignore_errors=True)
    print(f"demo: generating a synthetic 4-sequence brain study (seed {args.seed}) ...", flush=True)
    folder = synth_study(out, seed=args.seed)
    done.write_text(str(folder))
    return folder


def run_demo(args: argparse.Namespace) -> int:
    """Start everything, send one study, wait for SEG + SR, print the summary.

    Returns
    -------
    int
        0 when SEG and SR came back, 1 otherwise (with the reason on stderr).
    """
    from dicom_node.demo.netns import DemoNetnsError
    from dicom_node.demo.scenario import LoopTimes, OrthancClient, send_with_storescu, wait_for_results

    stop_demo(args)
    paths = _paths(args)
    try:
        svc = start_services(
            paths, netns=None if args.no_netns else args.netns,
            node_config=Path(args.node_config) if args.node_config else None,
        )
        folder = _study_folder(args, paths)
        import pydicom

        first = next(folder.rglob("*.dcm"))
        study_uid = str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)
        orthanc = OrthancClient(f"http://127.0.0.1:{svc['http_port']}", svc["user"], svc["password"])
        rules = orthanc.get("/mrinode/rules")
        if rules.get("errors"):
            raise RuntimeError("the demo's routing rules have errors: " + " ".join(rules["errors"]))
        print("demo: sending the study into Orthanc with storescu (as a scanner would) ...", flush=True)
        times = LoopTimes(study_uid=study_uid, sent_start=time.time())
        count = send_with_storescu(folder, svc["dicom_port"])
        times.stored = time.time()
        print(f"demo: {count} instances stored in Orthanc; waiting for rule -> node -> SEG + SR ...", flush=True)
        wait_for_results(orthanc, times, timeout=args.timeout)
        from dicom_node.demo.summary import print_summary

        print_summary(orthanc, times, folder, paths.var / "overlay.png", svc)
        if svc.get("viewer_url"):
            from dicom_node.viewer import study_url

            print(f"Open the processed study in OHIF (SEG and SR in the series list; user {svc['user']}, "
                  f"password {svc['password']}):\n  {study_url(svc['viewer_url'], study_uid)}\n"
                  "  (open the SR, answer Yes to \"track measurements\": its diameters are listed in the Measurements panel)")
        orthanc.close()
    except (RuntimeError, TimeoutError, DemoNetnsError, OSError, ValueError) as exc:
        print(f"demo: FAILED: {exc}", file=sys.stderr)
        print(f"demo: logs are in {paths.var}; stop the services with `make demo-stop`.", file=sys.stderr)
        return 1
    return 0


def _forward(args: argparse.Namespace) -> int:
    from dicom_node.demo.netns import forward

    forward(args.netns, [int(p) for p in args.ports], Path(args.ready) if args.ready else None)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m dicom_node.demo``."""
    parser = argparse.ArgumentParser(prog="python -m dicom_node.demo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--var", default="var/demo", help="folder for data, logs and pid files (default var/demo)")
        p.add_argument("--netns", default=DEFAULT_NETNS, help=f"network namespace name (default {DEFAULT_NETNS})")
        p.add_argument("--no-netns", action="store_true", help="run without a namespace (Orthanc then listens on every interface)")

    run = sub.add_parser("run", help="start Orthanc and the node, send a synthetic study, wait for SEG + SR")
    common(run)
    run.add_argument("--seed", type=int, default=11, help="seed of the synthetic study (default 11)")
    run.add_argument("--study", default=None, help="send this DICOM folder instead of generating a study")
    run.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the results (default 900)")
    run.add_argument("--node-config", default=None, help="node configuration template (default deploy/demo/node.toml)")
    run.set_defaults(func=run_demo)
    stop = sub.add_parser("stop", help="stop the demo's services and remove its namespace")
    common(stop)
    stop.set_defaults(func=stop_demo)
    fwd = sub.add_parser("forward", help=argparse.SUPPRESS)
    fwd.add_argument("--netns", required=True)
    fwd.add_argument("--ports", nargs="+", required=True)
    fwd.add_argument("--ready", default=None)
    fwd.set_defaults(func=_forward)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
