"""``python -m dicom_node.viewer fetch|serve``: fetch the pinned OHIF build; serve it beside the PACS."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_APP_CONFIG = _ROOT / "deploy" / "viewer" / "app-config.js"


def _fetch(args: argparse.Namespace) -> int:
    from dicom_node.viewer.bundle import fetch_bundle

    dist = fetch_bundle(Path(args.var) if args.var else None)
    print(f"OHIF viewer ready in {dist}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from dicom_node.viewer.app import ViewerSettings, create_app
    from dicom_node.viewer.bundle import default_dist

    settings = ViewerSettings(
        dist=Path(args.dist) if args.dist else default_dist(),
        app_config=Path(args.app_config),
        pacs_url=args.pacs_url,
        dicomweb_root=args.dicomweb_root,
    )
    app = create_app(settings)
    print(f"viewer: http://{args.host}:{args.port}/ (DICOMweb from {settings.pacs_url}{settings.dicomweb_root})",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m dicom_node.viewer``."""
    parser = argparse.ArgumentParser(prog="python -m dicom_node.viewer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="fetch the pinned @ohif/app build into var/viewer (cached)")
    fetch.add_argument("--var", default=None, help="cache folder (default var/viewer)")
    fetch.set_defaults(func=_fetch)
    serve = sub.add_parser("serve", help="serve OHIF and proxy the PACS's DICOMweb on one loopback origin")
    serve.add_argument("--pacs-url", required=True, help="the PACS's HTTP root, e.g. http://127.0.0.1:8042")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8043, help="port (default 8043)")  # urls.DEFAULT_PORT
    serve.add_argument("--dicomweb-root", default="/dicom-web", help="DICOMweb path (default /dicom-web)")
    serve.add_argument("--dist", default=None, help="OHIF dist folder (default var/viewer/ohif-<version>/dist)")
    serve.add_argument("--app-config", default=str(DEFAULT_APP_CONFIG), help="OHIF app-config.js")
    serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    from dicom_node.viewer.bundle import ViewerBundleError

    try:
        result: int = args.func(args)
    except (ViewerBundleError, FileNotFoundError) as exc:
        print(f"viewer: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
