"""OHIF viewer benchmark: seconds from opening a study URL to the SEG overlay drawn, against
opening the same study without loading the SEG (first image drawn) in the same run.

A real Orthanc (DICOMweb plugin), the viewer (``python -m dicom_node.viewer serve``) and
Debian's Chromium (Playwright, ``executable_path``) run in a private network namespace
(``tests/netns.sh``) when possible. Each study is the test phantom (:mod:`tests.viewer.phantom`)
with the node's SEG; every figure is the median of ``--repeats`` fresh page loads.

``python -m bench.viewer [--quick] [--repeats N]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TCP_NODELAY": "1"}

#: Wait until the stack viewport has drawn an image (any non-black canvas pixel).
_IMAGE_DRAWN = """() => {
  const re = window.cornerstone && cornerstone.getRenderingEngines()[0];
  const vp = re && re.getViewports()[0];
  if (!vp || !vp.getCurrentImageId()) return false;
  const c = vp.canvas, d = c.getContext('2d', {willReadFrequently: true}).getImageData(0, 0, c.width, c.height).data;
  for (let p = 0; p < d.length; p += 4 * 97) if (d[p] > 20) return true;
  return false;
}"""
#: Wait until a segment colour is on the canvas.
_OVERLAY_DRAWN = """() => {
  const vp = cornerstone.getRenderingEngines()[0].getViewports()[0];
  const c = vp.canvas, d = c.getContext('2d', {willReadFrequently: true}).getImageData(0, 0, c.width, c.height).data;
  for (let p = 0; p < d.length; p += 4) if (Math.max(d[p], d[p+1], d[p+2]) - Math.min(d[p], d[p+1], d[p+2]) >= 20) return true;
  return false;
}"""


def _study(folder: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[str, list[Path]]:
    from dicom_node.io.codes import BRATS_SEGMENTS, AlgorithmSpec
    from dicom_node.io.reader import read_series
    from dicom_node.io.seg import write_seg
    from tests.viewer.phantom import write_phantom_series

    series = write_phantom_series(folder / "src", shape=shape, spacing=spacing)
    vol = read_series(series.paths)[0]
    seg = write_seg(series.labels, vol, BRATS_SEGMENTS, AlgorithmSpec(name="brain-tumour-demo", version="0.1.0"))
    seg.save_as(folder / "seg.dcm")
    return series.study_uid, [*series.paths, folder / "seg.dcm"]


def _time_open(context: Any, url: str, with_seg: bool) -> float:
    from tests.viewer.ohif import OhifPage

    page = OhifPage(context)
    try:
        t0 = time.perf_counter()
        page.page.goto(url)
        if with_seg:
            page.page.wait_for_function(
                "() => window.services && window.services.displaySetService.getActiveDisplaySets().length >= 2",
                timeout=120000)
            page.page.get_by_text("mrinode segmentation", exact=True).dblclick()
            page.page.get_by_role("button", name="Yes").click(timeout=120000)
            page.page.wait_for_function(_OVERLAY_DRAWN, timeout=120000, polling=50)
        else:
            page.page.wait_for_function(_IMAGE_DRAWN, timeout=120000, polling=50)
        seconds = time.perf_counter() - t0
        if page.errors:
            raise RuntimeError(f"console errors: {page.errors[:3]}")
        return seconds
    finally:
        page.close()


def _run(quick: bool, repeats: int) -> list[tuple[str, int, float, float]]:
    from playwright.sync_api import sync_playwright

    from dicom_node.viewer import default_dist, study_url
    from dicom_node.viewer.bundle import check_dist
    from tests.support.orthanc import DICOMWEB_PLUGIN, OrthancServer
    from tests.viewer.ohif import ViewerProcess, chromium_context

    check_dist(default_dist())
    sizes = [((96, 96, 24), (2.5, 2.5, 5.0))]
    if not quick:
        sizes.append(((256, 256, 96), (0.9375, 0.9375, 1.25)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp_name:
        tmp = Path(tmp_name)
        with OrthancServer(tmp / "orthanc", plugins=[DICOMWEB_PLUGIN]) as pacs, \
                ViewerProcess(pacs.url, tmp / "viewer.log") as viewer, sync_playwright() as pw, \
                chromium_context(pw, tmp / "profile", pacs.auth) as context:
            for n, (shape, spacing) in enumerate(sizes):
                study_uid, files = _study(tmp / f"study{n}", shape, spacing)
                for path in files:
                    pacs.upload(path)
                url = study_url(viewer.url, study_uid)
                _time_open(context, url, with_seg=False)  # warm the browser cache and Orthanc's
                anchor, overlay = [], []
                for _ in range(repeats):  # interleaved, so drift hits both alike
                    anchor.append(_time_open(context, url, with_seg=False))
                    overlay.append(_time_open(context, url, with_seg=True))
                rows.append((f"{shape[0]}x{shape[1]}x{shape[2]}", shape[2], statistics.median(anchor),
                             statistics.median(overlay)))
    return rows


def _print(rows: list[tuple[str, int, float, float]], repeats: int) -> None:
    print(f"OHIF 3.13.2 in headless Chromium (software GL), Orthanc DICOMweb through the viewer proxy; "
          f"median of {repeats} page loads each")
    print(f"{'study (cols x rows x slices)':<30} {'anchor: first image drawn':>27} {'SEG overlay drawn':>19} "
          f"{'overlay - anchor':>17}")
    for name, _, anchor, overlay in rows:
        print(f"{name:<30} {anchor:>25.2f} s {overlay:>17.2f} s {overlay - anchor:>15.2f} s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench.viewer", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small study only, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(list(argv) if argv is not None else None)
    for tool in ("/usr/sbin/Orthanc", "/usr/bin/chromium"):
        if shutil.which(tool) is None:
            print(f"bench.viewer: {tool} is not installed (run `make setup`).", file=sys.stderr)
            return 1
    if os.environ.get("MRINODE_IN_NETNS") != "1" and os.geteuid() == 0:
        passed = list(argv) if argv is not None else sys.argv[1:]
        cmd = [str(ROOT / "tests" / "netns.sh"), sys.executable, "-m", "bench.viewer", *passed]
        return subprocess.run(cmd, cwd=ROOT, env=ENV, check=False).returncode
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    repeats = 1 if args.quick else max(1, args.repeats)
    _print(_run(args.quick, repeats), repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
