"""Drive OHIF in Debian's Chromium (Python Playwright, ``executable_path``; no browser download).

OHIF exposes ``window.services``, ``window.cornerstone`` and ``window.cornerstoneTools``;
the helpers below click as a user would (thumbnails, the "open this segmentation?"
prompt) and read what was drawn: the viewport canvas's pixels with the viewer's own
canvas-to-patient mapping, and the SVG lines of the SR's annotations.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.viewer.overlay import SliceCapture

__all__ = ["CHROMIUM", "OhifPage", "ViewerProcess", "chromium_context"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]

#: Read the stack viewport's canvas (waiting for the viewport: OHIF replaces it when a
#: display set is dropped in): coloured pixels and the canvas → patient mapping.
_CAPTURE_JS = """async (k) => {
  let vp = null;
  for (let t = 0; t < 200 && !(vp && vp.getCurrentImageId && vp.getCurrentImageId()); t++) {
    if (t) await new Promise(r => setTimeout(r, 50));
    const re = cornerstone.getRenderingEngines()[0];
    vp = re && re.getViewports()[0];
  }
  if (k !== null) { await vp.setImageIdIndex(k); vp.render(); }
  const canvas = vp.canvas;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  let last = null, out = [];
  for (let round = 0; round < 25; round++) {
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    await new Promise(r => setTimeout(r, 30));
    const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    out = [];
    for (let p = 0; p < canvas.width * canvas.height; p++) {
      const r = d[4*p], g = d[4*p+1], b = d[4*p+2];
      if (Math.max(r, g, b) - Math.min(r, g, b) >= 20) out.push(p % canvas.width, Math.floor(p / canvas.width), r, g, b);
    }
    const key = out.length + ':' + out.slice(0, 50).join(',');
    if (key === last && round >= 2) break;
    last = key;
  }
  const scale = canvas.clientWidth / canvas.width;
  return {imageId: vp.getCurrentImageId(), n: vp.getImageIds().length, pix: out,
          w00: vp.canvasToWorld([0, 0]), w10: vp.canvasToWorld([scale, 0]), w01: vp.canvasToWorld([0, scale])};
}"""

#: The SR annotations: tool, image, labels, and the SVG lines drawn for each (canvas points).
_SR_JS = r"""async (uid) => {
  let vp = null;
  for (let t = 0; t < 200 && !(vp && vp.getCurrentImageId && vp.getCurrentImageId()); t++) {
    if (t) await new Promise(r => setTimeout(r, 50));
    const re = cornerstone.getRenderingEngines()[0];
    vp = re && re.getViewports()[0];
  }
  const anns = cornerstoneTools.annotation.state.getAllAnnotations().filter(a => a.metadata.toolName === 'DICOMSRDisplay');
  const result = [];
  for (const a of anns) {
    if (uid !== null && a.annotationUID !== uid) continue;
    const entry = {uid: a.annotationUID, imageId: a.metadata.referencedImageId, labels: a.data.labels || [],
                   world: (a.data.renderableData.POLYLINE || [])};
    if (uid !== null) {
      const index = vp.getImageIds().indexOf(a.metadata.referencedImageId);
      await vp.setImageIdIndex(index); vp.render();
      // cornerstone draws an annotation's lines just before the <g> holding its text
      entry.svg = [];
      for (let t = 0; t < 50 && entry.svg.length === 0; t++) {
        await new Promise(r => setTimeout(r, 100));
        let pending = [];
        for (const svg of vp.element.querySelectorAll('svg')) {
          for (const e of svg.children) {
            if (e.tagName === 'line' && e.getAttribute('stroke-dasharray') === '4,4') {
              pending.push([[+e.getAttribute('x1'), +e.getAttribute('y1')], [+e.getAttribute('x2'), +e.getAttribute('y2')]]);
            } else if (e.tagName === 'polyline') {
              pending.push(e.getAttribute('points').trim().split(/\s+/).map(p => p.split(',').map(Number)));
            } else if (e.tagName === 'g' && e.getAttribute('data-annotation-uid')) {
              if (e.getAttribute('data-annotation-uid') === a.annotationUID) entry.svg = pending;
              pending = [];
            }
          }
        }
      }
      const canvas = vp.canvas, scale = canvas.clientWidth / canvas.width;
      entry.w00 = vp.canvasToWorld([0, 0]); entry.w10 = vp.canvasToWorld([scale, 0]); entry.w01 = vp.canvasToWorld([0, scale]);
      entry.current = vp.getCurrentImageId();
    }
    result.push(entry);
  }
  return result;
}"""


#: Console lines that say OHIF failed, whatever their level.
_OHIF_FAILURE = re.compile(r"Error Boundary|TypeError|went wrong|skipping annotation|not currently supported")
#: The one warning OHIF 3.13 logs for a TID 1411 volume group (no spatial coordinate) while
#: it hydrates an SR: its adapters try every tool on the group, and the rectangle tool's test
#: reads the group's (absent) coordinate. Kept apart from the errors, to be counted.
_VOLUME_GROUP_SKIPPED = re.compile(
    r"^Unable to generate tool state for .*TypeError: Cannot read properties of undefined \(reading 'ValueType'\)"
    r"\s+at RectangleROI\.getPointsCount .*\s+at RectangleROI\.isValidMeasurement .*\s+at "
    r"MeasurementReport_MeasurementReport\.getAdapterForCodeType", re.S)

#: The rows of OHIF's Measurements panel (label and figures) and the measurements behind them.
_PANEL_JS = r"""() => ({
  rows: [...document.querySelectorAll('[data-cy^="measurement-table-row-"]')].map(e => e.innerText),
  measurements: services.measurementService.getMeasurements().map(m => {
    const a = cornerstoneTools.annotation.state.getAnnotation(m.uid);
    return {uid: m.uid, label: m.label, toolName: m.toolName, imageId: m.referencedImageId,
            finding: m.finding ? {value: m.finding.CodeValue, scheme: m.finding.CodingSchemeDesignator} : null,
            points: a ? a.data.handles.points.map(p => [...p]) : null};
  })})"""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ViewerProcess:
    """``python -m dicom_node.viewer serve`` in front of a PACS, on a free loopback port."""

    def __init__(self, pacs_url: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.pacs_url = pacs_url

    def __enter__(self) -> ViewerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dicom_node.viewer", "serve", "--pacs-url", self.pacs_url, "--port",
                 str(self.port)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "TCP_NODELAY": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the viewer exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"the viewer did not answer: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def chromium_context(playwright: Any, profile: Path, credentials: tuple[str, str]) -> Iterator[Any]:
    """A persistent (fresh profile) Chromium context with the PACS credentials."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing (Debian package chromium); run `make system-deps`.")
    shutil.rmtree(profile, ignore_errors=True)
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1100, "height": 800}, device_scale_factor=1,
        http_credentials={"username": credentials[0], "password": credentials[1]},
    )
    try:
        yield context
    finally:
        context.close()


def sop_of(image_id: str) -> str:
    """The SOP Instance UID in a WADO-RS image id."""
    found = re.search(r"/instances/([0-9.]+)/frames/", image_id)
    if not found:
        raise ValueError(f"no SOP Instance UID in image id {image_id!r}")
    return found.group(1)


class OhifPage:
    """One OHIF tab with its console watched."""

    def __init__(self, context: Any) -> None:
        self.page = context.new_page()
        self.errors: list[str] = []
        self.skipped_volume_groups = 0
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def _console(self, message: Any) -> None:
        # OHIF's error boundary reports a crash at debug level ("Route viewer Error Boundary
        # TypeError ...", then "Something went wrong"); a skipped SR annotation is a warning
        if message.type == "warning" and _VOLUME_GROUP_SKIPPED.search(message.text):
            self.skipped_volume_groups += 1
        elif message.type == "error" or _OHIF_FAILURE.search(message.text):
            self.errors.append(f"{message.type}: {message.text[:500]}")

    def open_study(self, url: str, display_sets: int, timeout_ms: int = 60000) -> None:
        """Open the study URL and wait until OHIF lists ``display_sets`` series."""
        self.page.goto(url)
        self.page.wait_for_function(
            "(n) => window.services && window.services.displaySetService.getActiveDisplaySets().length >= n",
            arg=display_sets, timeout=timeout_ms)
        self.page.wait_for_function(
            "() => window.cornerstone && cornerstone.getRenderingEngines().length > 0 && "
            "cornerstone.getRenderingEngines()[0].getViewports().length > 0 && "
            "!!cornerstone.getRenderingEngines()[0].getViewports()[0].getCurrentImageId()", timeout=timeout_ms)
        skip = self.page.get_by_text("Skip all")
        with contextlib.suppress(Exception):
            skip.click(timeout=3000)

    def load_seg(self, description: str, timeout_ms: int = 60000) -> None:
        """Double-click the SEG's thumbnail and answer "Yes" to "open this segmentation?"."""
        self.page.get_by_text(description, exact=True).dblclick()
        self.page.get_by_role("button", name="Yes").click(timeout=timeout_ms)
        self.page.wait_for_function(
            "() => window.services.segmentationService.getSegmentations().length > 0", timeout=timeout_ms)

    def capture(self, index: int | None = None) -> tuple[str, SliceCapture]:
        """Show image ``index`` of the stack (or leave it) and read what is drawn."""
        data = self.page.evaluate(_CAPTURE_JS, index)
        return sop_of(data["imageId"]), SliceCapture.from_js(data)

    def capture_all(self) -> dict[str, tuple[int, SliceCapture]]:
        """Every image of the stack: SOP Instance UID → (its index in the stack, capture)."""
        n = int(self.page.evaluate("() => cornerstone.getRenderingEngines()[0].getViewports()[0].getImageIds().length"))
        out = {}
        for index in range(n):
            sop, cap = self.capture(index)
            out[sop] = (index, cap)
        return out

    def load_sr(self, description: str, annotations: int, timeout_ms: int = 30000) -> list[dict[str, Any]]:
        """Double-click the SR's thumbnail; wait for ``annotations`` drawn SR annotations."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        self.page.get_by_text(description, exact=True).dblclick()
        try:
            self.page.wait_for_function(
                "(n) => cornerstoneTools.annotation.state.getAllAnnotations()"
                ".filter(a => a.metadata.toolName === 'DICOMSRDisplay').length >= n", arg=annotations,
                timeout=timeout_ms)
        except PlaywrightTimeout:
            raise AssertionError(f"OHIF drew fewer than {annotations} SR measurements; console errors: "
                                 f"{self.errors}") from None
        result: list[dict[str, Any]] = self.page.evaluate(_SR_JS, None)
        return result

    def track_sr(self, measurements: int, timeout_ms: int = 30000) -> dict[str, Any]:
        """Answer "Yes" to "continue tracking measurements?"; wait for the panel's rows.

        Returns
        -------
        dict
            ``rows``: the Measurements panel's row texts; ``measurements``: OHIF's
            measurements (label, tool, image, finding code, world points of the handles).
        """
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.page.get_by_text("Do you want to continue tracking measurements for this study?").wait_for(
                timeout=timeout_ms)
            self.page.get_by_role("button", name="Yes").click(timeout=timeout_ms)
            self.page.wait_for_function(
                "(n) => services.measurementService.getMeasurements().length >= n", arg=measurements,
                timeout=timeout_ms)
            rows = self.page.locator('[data-cy^="measurement-table-row-"]')
            with contextlib.suppress(PlaywrightTimeout):  # OHIF opens the panel itself, mostly
                rows.first.wait_for(timeout=5000)
            if rows.count() == 0:  # else the right-hand panel's Measurements tab
                self.page.locator('[data-cy="trackedMeasurements-btn"]').click(timeout=timeout_ms)
            self.page.wait_for_function(
                "(n) => document.querySelectorAll('[data-cy^=\"measurement-table-row-\"]').length >= n",
                arg=measurements, timeout=timeout_ms)
        except PlaywrightTimeout:
            raise AssertionError(f"OHIF's Measurements panel does not list {measurements} measurements of the SR; "
                                 f"panel: {self.page.evaluate(_PANEL_JS)}; console errors: {self.errors}") from None
        result: dict[str, Any] = self.page.evaluate(_PANEL_JS)
        return result

    def sr_annotation(self, uid: str) -> dict[str, Any]:
        """Go to the annotation's image and read its SVG lines (canvas points) and mapping."""
        (entry,) = self.page.evaluate(_SR_JS, uid)
        return dict(entry)

    def screenshot(self, path: Path) -> None:
        """Save the page as PNG."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))

    def close(self) -> None:
        """Close the tab."""
        self.page.close()
