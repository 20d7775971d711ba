"""RANO-style bidimensional measurements and their SR groups (SCOORD polylines on the source image)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from dicom_node.io.codes import BRATS_SEGMENTS, AlgorithmSpec
from dicom_node.io.rano import bidimensional_measurements
from dicom_node.io.reader import read_series
from dicom_node.io.seg import write_seg
from dicom_node.io.sr import segment_bidimensional, segment_volumes_ml, write_measurement_report
from tests.io.series_factory import make_series
from tests.support.dciodvfy import dciodvfy


def _ellipse(shape: tuple[int, int, int], centre: tuple[float, float], a: float, b: float, ks: range,
             spacing: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    ii, jj = np.meshgrid(np.arange(shape[0]) * spacing[0], np.arange(shape[1]) * spacing[1], indexing="ij")
    plane = ((ii - centre[0]) / a) ** 2 + ((jj - centre[1]) / b) ** 2 <= 1.0
    mask = np.zeros(shape, bool)
    for k in ks:
        mask[:, :, k] = plane
    return mask


def test_diameters_of_an_ellipse_and_the_slice_with_the_largest_product() -> None:
    mask = _ellipse((80, 80, 6), (40.0, 40.0), 20.0, 8.0, range(1, 5))
    mask[:, :, 2] |= _ellipse((80, 80, 6), (40.0, 40.0), 24.0, 10.0, range(2, 3))[:, :, 2]  # biggest on k = 2
    (lesion,) = bidimensional_measurements(mask, (1.0, 1.0))
    assert lesion.slice_index == 2
    assert lesion.long_mm == pytest.approx(48.0, abs=1.0)
    assert lesion.short_mm == pytest.approx(20.0, abs=1.0)
    (a, b), (c, d) = np.array(lesion.long_axis), np.array(lesion.short_axis)
    long_dir, short_dir = b - a, d - c
    assert abs(np.dot(long_dir, short_dir)) / (np.linalg.norm(long_dir) * np.linalg.norm(short_dir)) < 1e-6
    assert lesion.measurable and lesion.slices == 4


def test_anisotropic_pixels_and_measurability() -> None:
    # 4 mm x 1 mm pixels: 24 columns x 6 rows of a rectangle are 92 mm x 5 mm between centres
    mask = np.zeros((40, 40, 3), bool)
    mask[5:29, 10:16, 0:2] = True
    (lesion,) = bidimensional_measurements(mask, (4.0, 1.0))
    assert lesion.long_mm == pytest.approx(np.hypot(92.0, 5.0), abs=0.01)
    assert not lesion.measurable  # the perpendicular is under 10 mm
    single = np.zeros((40, 40, 3), bool)
    single[5:20, 5:20, 1] = True
    (flat,) = bidimensional_measurements(single, (1.0, 1.0))
    assert not flat.measurable  # seen on one slice only


def test_lesions_are_connected_components_largest_first() -> None:
    mask = _ellipse((60, 60, 4), (15.0, 15.0), 6.0, 6.0, range(0, 2)) | _ellipse((60, 60, 4), (42.0, 40.0), 12.0,
                                                                                   12.0, range(1, 4))
    lesions = bidimensional_measurements(mask, (1.0, 1.0))
    assert [x.lesion for x in lesions] == [1, 2]
    assert lesions[0].long_mm > lesions[1].long_mm
    assert bidimensional_measurements(np.zeros((5, 5, 5), bool), (1.0, 1.0)) == []
    with pytest.raises(ValueError, match="3D mask"):
        bidimensional_measurements(np.zeros((5, 5), bool), (1.0, 1.0))


def test_sr_draws_the_diameters_on_the_measured_source_image(tmp_path) -> None:
    vol = read_series(make_series(tmp_path / "t1c", shape=(48, 40, 8), spacing=(1.0, 1.0, 3.0), frame_uid="1.2.3.4")[0])[0]
    labels = np.zeros(vol.shape, np.uint8)
    labels[10:36, 8:30, 2:6] = 2
    labels[14:32, 12:26, 3:5] = 3
    algorithm = AlgorithmSpec(name="t", version="1")
    seg = write_seg(labels, vol, BRATS_SEGMENTS, algorithm)
    bidim = segment_bidimensional(labels, vol, BRATS_SEGMENTS)
    assert bidim[1] == [] and len(bidim[3]) == 1
    sr = write_measurement_report(seg=seg, reference=vol, source_volumes=[vol], identifications=[],
                                  segment_volumes_ml=segment_volumes_ml(labels, vol, BRATS_SEGMENTS),
                                  bidimensional=bidim, algorithm=algorithm)
    sr.save_as(tmp_path / "sr.dcm")
    report = dciodvfy(tmp_path / "sr.dcm")
    assert report.errors == [], report.output
    ds = pydicom.dcmread(tmp_path / "sr.dcm")
    (measurements,) = [c for c in ds.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "126010"]
    groups = list(measurements.ContentSequence)
    # every group a viewer finds has a spatial coordinate, or merges (same TrackingUID) with one that has
    with_scoord: set[str] = set()
    uid_of = {}
    for g in groups:
        items = list(g.ContentSequence)
        uid = next(i.UID for i in items if i.ConceptNameCodeSequence[0].CodeValue == "112040")
        uid_of[id(g)] = uid
        for num in (i for i in items if i.ValueType == "NUM" and "ContentSequence" in i):
            (scoord,) = num.ContentSequence
            assert scoord.ValueType == "SCOORD" and scoord.GraphicType == "POLYLINE" and len(scoord.GraphicData) == 4
            (image,) = scoord.ContentSequence
            k = bidim[3][0].slice_index if "Enhancing" in items[0].TextValue else bidim[2][0].slice_index
            assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == vol.slice_refs[k][1]
            with_scoord.add(uid)
    assert set(uid_of.values()) == with_scoord
    long_axis = next(i for g in groups for i in g.ContentSequence
                     if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeMeaning == "Long Axis"
                     and "Enhancing" in g.ContentSequence[0].TextValue)
    end_points = np.array(long_axis.ContentSequence[0].GraphicData, float).reshape(2, 2) - 0.5  # pixel centres
    k = bidim[3][0].slice_index
    for col, row in np.round(end_points).astype(int):
        assert labels[col, row, k] == 3  # (column, row) = (i, j) of the label volume


def test_range_min_max_matches_slicing() -> None:
    """The sparse-table range extrema behind the perpendicular chords agree with plain slicing."""
    from dicom_node.io.rano import _range_min_max

    rng = np.random.default_rng(5)
    values = rng.normal(size=137)
    first = rng.integers(0, 136, size=300)
    end = np.minimum(first + rng.integers(1, 60, size=300), 137)
    low, high = _range_min_max(values, first, end)
    assert np.array_equal(low, [values[a:b].min() for a, b in zip(first, end, strict=True)])
    assert np.array_equal(high, [values[a:b].max() for a, b in zip(first, end, strict=True)])
