"""OHIF (the pinned build, served by ``dicom_node.viewer``) in Debian's Chromium shows the
node's SEG on target and the SR's measurements on the enhancing tumour, without a console
error; a SEG shifted by one slice or flipped left-right is caught by the same check.

One Orthanc (with DICOMweb), one viewer process and one browser serve the whole module;
each case is its own small study (a phantom with an exact label map, see
:mod:`tests.viewer.phantom`), written by the product's SEG and SR writers. Screenshots go
to ``var/test-artifacts/viewer/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pydicom
import pytest
from highdicom.color import CIELabColor

from dicom_node.io.codes import BRATS_SEGMENTS, AlgorithmSpec
from dicom_node.io.reader import read_series
from dicom_node.io.seg import write_seg
from dicom_node.io.sr import segment_bidimensional, segment_volumes_ml, write_measurement_report
from dicom_node.viewer import default_dist, study_url
from dicom_node.viewer.bundle import check_dist
from tests.support.dciodvfy import dciodvfy
from tests.support.orthanc import DICOMWEB_PLUGIN, OrthancServer
from tests.viewer.ohif import OhifPage, ViewerProcess, chromium_context, sop_of
from tests.viewer.overlay import SliceCapture, judge_lines, judge_overlay
from tests.viewer.phantom import PhantomSeries, write_phantom_series

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "viewer"
ALGORITHM = AlgorithmSpec(name="brain-tumour-demo", version="0.1.0")
ET, NECROSIS = 3, 1


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    with OrthancServer(tmp_path_factory.mktemp("orthanc"), plugins=[DICOMWEB_PLUGIN]) as server:
        yield server


@pytest.fixture(scope="module")
def viewer(pacs: OrthancServer) -> Iterator[ViewerProcess]:
    check_dist(default_dist())  # the pinned OHIF build: `make viewer`
    with ViewerProcess(pacs.url, ARTEFACTS / "viewer.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, pacs: OrthancServer) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, chromium_context(pw, tmp_path_factory.mktemp("chromium"), pacs.auth) as context:
        yield context


def _upload(pacs: OrthancServer, paths: list[Path]) -> None:
    for path in paths:
        pacs.upload(path)


def _study(tmp: Path, pacs: OrthancServer, *, orientation: str, order: str, seg_labels: str = "true",
           with_sr: bool = True) -> tuple[PhantomSeries, Any]:
    """Write the phantom series, its SEG (true, shifted or flipped labels) and SR; store them."""
    series = write_phantom_series(tmp / "src", orientation=orientation, instance_order=order)
    vol = read_series(series.paths)[0]
    assert [ref[1] for ref in vol.slice_refs] == series.sop_uids_by_k  # the reader's k is the phantom's
    labels = series.labels
    if seg_labels == "shifted":
        labels = np.roll(labels, 1, axis=2)
    elif seg_labels == "flipped":  # left-right: the voxel axis along the patient's x
        labels = np.flip(labels, axis=int(np.argmax(np.abs(series.affine_lps[0, :3])))).copy()
    seg = write_seg(labels, vol, BRATS_SEGMENTS, ALGORITHM)
    seg.save_as(tmp / "seg.dcm")
    files = [*series.paths, tmp / "seg.dcm"]
    sr = None
    if with_sr:
        sr = write_measurement_report(
            seg=seg, reference=vol, source_volumes=[vol], identifications=[], algorithm=ALGORITHM,
            segment_volumes_ml=segment_volumes_ml(series.labels, vol, BRATS_SEGMENTS),
            bidimensional=segment_bidimensional(series.labels, vol, BRATS_SEGMENTS), notes=["Phantom study."])
        sr.save_as(tmp / "sr.dcm")
        files.append(tmp / "sr.dcm")
        assert dciodvfy(tmp / "sr.dcm").errors == []
    assert dciodvfy(tmp / "seg.dcm").errors == []
    _upload(pacs, files)
    return series, sr


def _seg_colours(seg_path: Path) -> list[tuple[int, tuple[int, int, int]]]:
    """(label value, RGB) of each segment, the RGB from the SEG's own CIELab value."""
    seg = pydicom.dcmread(seg_path)
    by_number = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    out = []
    for number, spec in enumerate(BRATS_SEGMENTS, start=1):
        lab = by_number[number].RecommendedDisplayCIELabValue
        rgb = CIELabColor.from_dicom_value([int(x) for x in lab]).to_rgb()
        out.append((spec.label_value, (int(rgb[0]), int(rgb[1]), int(rgb[2]))))
    return out


def _overlay(page: OhifPage, series: PhantomSeries, seg_path: Path) -> tuple[Any, dict[str, tuple[int, SliceCapture]]]:
    captured = page.capture_all()
    assert set(captured) == set(series.sop_uids_by_k), "the viewer's stack is not the series"
    by_k = {series.sop_uids_by_k.index(sop): cap for sop, (_, cap) in captured.items()}
    return judge_overlay(by_k, series.labels, series.affine_lps, _seg_colours(seg_path)), captured


CASES = [("axial", "with"), ("sagittal", "with"), ("oblique", "with"), ("axial", "against")]


@pytest.mark.parametrize(("orientation", "order"), CASES, ids=[f"{o}-instances-{d}" for o, d in CASES])
def test_seg_and_sr_are_drawn_on_target(tmp_path: Path, pacs: OrthancServer, viewer: ViewerProcess, browser: Any,
                                        orientation: str, order: str) -> None:
    name = f"{orientation}-instances-{order}"
    series, _ = _study(tmp_path, pacs, orientation=orientation, order=order)
    page = OhifPage(browser)
    try:
        page.open_study(study_url(viewer.url, series.study_uid), display_sets=3)
        page.load_seg("mrinode segmentation")
        verdict, captured = _overlay(page, series, tmp_path / "seg.dcm")
        (ARTEFACTS / f"{name}-verdict.txt").write_text(f"{verdict}\n")
        assert verdict.ok, verdict.problems
        et_k = int(np.argmax((series.labels == ET).sum(axis=(0, 1))))
        page.capture(captured[series.sop_uids_by_k[et_k]][0])
        page.screenshot(ARTEFACTS / f"{name}-seg.png")

        non_empty = [s.label_value for s in BRATS_SEGMENTS if (series.labels == s.label_value).any()]
        annotations = page.load_sr("mrinode measurement report", annotations=len(non_empty))
        assert len(annotations) == len(non_empty)
        (et,) = [a for a in annotations if any(lab["label"].startswith("Enhancing tumour") for lab in a["labels"])]
        shown = {lab["label"]: lab["value"] for lab in et["labels"]}
        assert shown["Enhancing tumour (RANO measurable)"] == ""
        volume = float(np.sum(series.labels == ET)) * abs(np.linalg.det(series.affine_lps[:3, :3])) / 1000
        assert shown["Volume"] == f"{volume:.2f} ml"
        assert {"Long Axis", "Short Axis"} <= set(shown)
        drawn = page.sr_annotation(et["uid"])
        k = series.sop_uids_by_k.index(drawn["current"].split("/instances/")[1].split("/")[0])
        assert len(drawn["svg"]) == 2, drawn["svg"]  # the two diameters, drawn on the measured image
        mapping = SliceCapture(np.zeros((0, 5)), np.asarray(drawn["w00"]), np.asarray(drawn["w10"]),
                               np.asarray(drawn["w01"]))
        lines = [mapping.to_world(np.asarray(points, float)) for points in drawn["svg"]]
        assert judge_lines(lines, k, series.labels, series.affine_lps, on_value=ET, within_values=(ET, NECROSIS)) == []
        page.screenshot(ARTEFACTS / f"{name}-sr.png")

        # "continue tracking?" — Yes: OHIF's Measurements panel lists the diameters, drawn as
        # its bidirectional tool on the measured image
        panel = page.track_sr(measurements=len(non_empty))
        page.screenshot(ARTEFACTS / f"{name}-panel.png")
        _check_panel(panel, series)
        # OHIF skips each TID 1411 volume group (no coordinate) with one warning while hydrating
        assert page.skipped_volume_groups == len(non_empty), page.skipped_volume_groups
        assert page.errors == [], page.errors
    finally:
        page.close()


def _check_panel(panel: dict[str, Any], series: PhantomSeries) -> None:
    """One panel row per measured segment, with the SEG's name and code, the SR's diameters,
    and the enhancing tumour's drawn on its measured image, on the enhancing tumour."""
    vol = read_series(series.paths)[0]
    bidim = segment_bidimensional(series.labels, vol, BRATS_SEGMENTS)
    rows, measurements = panel["rows"], panel["measurements"]
    (ARTEFACTS / "panel.txt").write_text(f"{rows}\n")
    expected = {n: BRATS_SEGMENTS[n - 1] for n, lesions in bidim.items() if lesions}
    assert len(rows) == len(measurements) == len(expected), (rows, measurements)
    for number, spec in expected.items():
        (lesion,) = bidim[number]
        # the row: its number, the segment's name, L and W, the finding site and finding
        name = spec.label + (" (RANO measurable)" if spec.label_value == ET else "")
        (row,) = [r for r in rows if name in r.split("\n")]
        assert spec.type.meaning in row.split("\n"), row  # the SEG's SegmentedPropertyType
        (m,) = [m for m in measurements if m["label"] == name]
        assert m["toolName"] == "Bidirectional"
        assert m["finding"] == {"value": spec.type.value, "scheme": spec.type.scheme_designator}
        figures = dict(re.findall(r"([LW]):\s*([0-9.]+)\s*mm", row))
        assert set(figures) == {"L", "W"}, row
        # OHIF shows three significant digits
        assert abs(float(figures["L"]) - lesion.long_mm) <= 0.051, (row, lesion)
        assert abs(float(figures["W"]) - lesion.short_mm) <= 0.051, (row, lesion)
        assert sop_of(m["imageId"]) == series.sop_uids_by_k[lesion.slice_index]
        if spec.label_value == ET:
            points = np.asarray(m["points"], float)
            assert judge_lines([points[:2], points[2:]], lesion.slice_index, series.labels, series.affine_lps,
                               on_value=ET, within_values=(ET, NECROSIS)) == []


@pytest.mark.parametrize("defect", ["shifted", "flipped"])
def test_a_misplaced_seg_is_caught(tmp_path: Path, pacs: OrthancServer, viewer: ViewerProcess, browser: Any,
                                   defect: str) -> None:
    series, _ = _study(tmp_path, pacs, orientation="axial", order="with", seg_labels=defect, with_sr=False)
    page = OhifPage(browser)
    try:
        page.open_study(study_url(viewer.url, series.study_uid), display_sets=2)
        page.load_seg("mrinode segmentation")
        verdict, _ = _overlay(page, series, tmp_path / "seg.dcm")
        page.screenshot(ARTEFACTS / f"{defect}-seg.png")
        (ARTEFACTS / f"{defect}-verdict.txt").write_text(f"{verdict}\n")
        assert not verdict.ok, f"a {defect} SEG passed the overlay check: {verdict}"
        assert page.errors == [], page.errors
    finally:
        page.close()


def test_a_report_without_measurements_opens_as_text(tmp_path: Path, pacs: OrthancServer, viewer: ViewerProcess,
                                                     browser: Any) -> None:
    """The "not performed" report (no SEG, nothing to draw) opens without an error, its words shown."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    series = write_phantom_series(tmp_path / "src", orientation="axial", instance_order="with")
    vol = read_series(series.paths)[0]
    note = f"Model {ALGORITHM.name} {ALGORITHM.version} was not run: it needs T1C and FLAIR; the study holds T1C."
    ident = SimpleNamespace(series_uid=vol.series_uid, series_number=5, description="t1_mprage_post", label="T1C",
                            confidence=0.97)
    sr = write_measurement_report(seg=None, reference=None, source_volumes=[vol], segment_volumes_ml={},
                                  identifications=[ident], algorithm=ALGORITHM, missing_sequences=["FLAIR"],
                                  notes=[note])
    sr.save_as(tmp_path / "sr.dcm")
    assert dciodvfy(tmp_path / "sr.dcm").errors == []
    _upload(pacs, [*series.paths, tmp_path / "sr.dcm"])
    page = OhifPage(browser)
    try:
        page.open_study(study_url(viewer.url, series.study_uid), display_sets=2)
        page.page.get_by_text("mrinode measurement report", exact=True).dblclick()
        for words in (note, "Not performed: required sequences missing", "Fluid attenuated T2 weighted (FLAIR)"):
            try:
                page.page.get_by_text(words, exact=False).first.wait_for(timeout=30000)
            except PlaywrightTimeout:
                raise AssertionError(f"OHIF does not show {words!r}; console errors: {page.errors}") from None
        page.screenshot(ARTEFACTS / "not-performed-sr.png")
        assert page.errors == [], page.errors
    finally:
        page.close()
