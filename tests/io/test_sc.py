"""Optional burned-in Secondary Capture overlay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.io.codes import BRATS_SEGMENTS
from dicom_node.io.reader import read_series
from dicom_node.io.sc import write_overlay_sc
from tests.io.series_factory import make_series
from tests.support.dciodvfy import dciodvfy


def test_overlay_sc_pixels_and_validity(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path / "src", orientation="axial", shape=(20, 16, 6))
    (vol,) = read_series(paths)
    labels = np.zeros(vol.shape, np.uint8)
    labels[2:8, 3:9, 2:4] = 2
    labels[4, 5, 3] = 1
    window = (0.0, 4000.0)
    scs = write_overlay_sc(vol, labels, BRATS_SEGMENTS, window=window, alpha=0.5)
    assert len(scs) == 2 and [int(s.InstanceNumber) for s in scs] == [1, 2]
    assert list(scs[0].PatientOrientation) == ["L", "P"]
    assert scs[0].StudyInstanceUID == vol.meta["study_uid"]
    path = tmp_path / "sc.dcm"
    scs[1].save_as(path)
    report = dciodvfy(path)
    assert report.errors == [] and report.warnings == [], report.output
    rgb = pydicom.dcmread(path).pixel_array  # slice k = 3, (rows, cols, 3)
    grey = np.clip(vol.data[:, :, 3].T / 4000.0, 0, 1) * 255
    # Oedema pixel (i=2, j=3): half grey, half the segment colour.
    expected = 0.5 * grey[3, 2] + 0.5 * np.array(BRATS_SEGMENTS[1].rgb)
    assert np.allclose(rgb[3, 2], expected, atol=1.0)
    necrotic = 0.5 * grey[5, 4] + 0.5 * np.array(BRATS_SEGMENTS[0].rgb)
    assert np.allclose(rgb[5, 4], necrotic, atol=1.0)
    # An unlabelled pixel stays grey.
    assert np.allclose(rgb[12, 15], grey[12, 15], atol=1.0)


def test_overlay_sc_refuses_wrong_shape(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path / "src", shape=(8, 8, 3))
    (vol,) = read_series(paths)
    with pytest.raises(ValueError, match="differs from series 3"):
        write_overlay_sc(vol, np.zeros((8, 8, 2), np.uint8), BRATS_SEGMENTS)
