"""Series -> volume: exact voxels and affines for every geometry, clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from dicom_node.io.grouping import group_series
from dicom_node.io.reader import SeriesReadError, read_series
from tests.io.series_factory import (
    ORIENTATIONS,
    make_dwi_series,
    make_enhanced_series,
    make_mosaic_series,
    make_series,
)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("order", ["with", "against", "random"])
def test_geometry_and_voxels_exact(tmp_path: Path, orientation: str, order: str) -> None:
    paths, truth = make_series(tmp_path, orientation=orientation, instance_order=order, rescale=(0.5, -3.0))
    (vol,) = read_series(paths)
    assert vol.data.dtype == np.float32
    assert np.array_equal(vol.data, truth.data)
    np.testing.assert_allclose(vol.affine, truth.affine, atol=1e-6)
    assert [ref[1] for ref in vol.slice_refs] == truth.sop_uids_by_k
    assert [str(h.SOPInstanceUID) for h in vol.headers] == truth.sop_uids_by_k
    assert all("PixelData" not in h for h in vol.headers)
    assert vol.series_uid == truth.series_uid
    assert vol.split is None and vol.meta["series_number"] == 3 and vol.meta["tr"] == 500.0
    np.testing.assert_allclose(vol.affine_lps[:2], -vol.affine[:2])


@pytest.mark.parametrize(
    ("syntax", "shape"),
    [(RLELossless, (24, 20, 5)), (JPEGLSLossless, (24, 20, 5)), (JPEG2000Lossless, (40, 36, 4))],
)
def test_compressed_transfer_syntaxes(tmp_path: Path, syntax: str, shape: tuple[int, int, int]) -> None:
    paths, truth = make_series(tmp_path, orientation="oblique", shape=shape, transfer_syntax=syntax)
    assert pydicom.dcmread(paths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    (vol,) = read_series(paths)
    assert np.array_equal(vol.data, truth.data)
    np.testing.assert_allclose(vol.affine, truth.affine, atol=1e-6)


def test_enhanced_mr_frames_against_position(tmp_path: Path) -> None:
    paths, truth = make_enhanced_series(tmp_path)
    (vol,) = read_series(paths)
    assert np.array_equal(vol.data, truth.data)
    np.testing.assert_allclose(vol.affine, truth.affine, atol=1e-6)
    assert [ref[2] for ref in vol.slice_refs] == truth.extra["frame_of_k"]
    assert len(vol.headers) == 1
    assert vol.meta["flip_angle"] == 90.0  # top-level value wins over the functional group


def test_mosaic_is_cut_into_slices(tmp_path: Path) -> None:
    paths, truth = make_mosaic_series(tmp_path)
    (vol,) = read_series(paths)
    assert vol.shape == truth.data.shape
    assert np.array_equal(vol.data, truth.data)
    np.testing.assert_allclose(vol.affine, truth.affine, atol=1e-5)


def test_dwi_split_by_b_value(tmp_path: Path) -> None:
    paths, truths = make_dwi_series(tmp_path, b_values=(1000.0, 0.0, 500.0))
    vols = read_series(paths)
    assert [v.split for v in vols] == ["b0", "b500", "b1000"]
    by_b = {t.extra["b"]: t for t in truths}
    for vol in vols:
        truth = by_b[vol.meta["b_value"]]
        assert np.array_equal(vol.data, truth.data)
        np.testing.assert_allclose(vol.affine, truth.affine, atol=1e-6)
        assert vol.label == vol.split


def _expect_refusal(paths: list[Path], *fragments: str) -> str:
    with pytest.raises(SeriesReadError) as info:
        read_series(paths)
    message = str(info.value)
    assert message.startswith("Cannot read series 3 't1_se' (uid:")
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_slice_is_refused(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path, drop_slice=5)
    _expect_refusal(paths, "1 slice(s) are missing")


def test_gantry_tilt_is_refused(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path, tilt_mm=0.4)
    _expect_refusal(paths, "gantry tilt")


def test_mixed_orientation_is_refused(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path, orientation="axial")
    ds = pydicom.dcmread(paths[0])
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0.9", "-0.43589"]
    ds.save_as(paths[0])
    _expect_refusal(paths, "different orientations")


def test_mixed_pixel_spacing_is_refused(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path)
    ds = pydicom.dcmread(paths[2])
    ds.PixelSpacing = ["1.5", "1.5"]
    ds.save_as(paths[2])
    _expect_refusal(paths, "different pixel spacings")


def test_uneven_spacing_is_refused(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path, instance_order="with", shuffle_files=False)
    ds = pydicom.dcmread(paths[4])
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [str(ipp[0]), str(ipp[1]), str(ipp[2] + 0.8)]
    ds.save_as(paths[4])
    _expect_refusal(paths, "uneven")


def test_duplicate_positions_without_split_key_are_refused(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path / "a", instance_order="with", shuffle_files=False)
    ds = pydicom.dcmread(paths[1])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    copy = tmp_path / "a" / "copy.dcm"
    ds.save_as(copy)
    _expect_refusal([*paths, copy], "share a position")


def test_no_pixel_data_is_refused(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path)
    ds = pydicom.dcmread(paths[0])
    del ds.PixelData
    ds.save_as(paths[0])
    _expect_refusal(paths, "no pixel data")


def test_files_of_two_series_are_refused(tmp_path: Path) -> None:
    a, _ = make_series(tmp_path / "a")
    b, _ = make_series(tmp_path / "b")
    _expect_refusal([*a, *b], "2 different series")


def test_group_series_skips_non_dicom(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, ta = make_series(tmp_path / "a", shape=(8, 8, 3))
    b, tb = make_series(tmp_path / "b" / "deeper", shape=(8, 8, 4))
    (tmp_path / "notes.txt").write_text("not dicom")
    groups = group_series(tmp_path)
    assert {k: sorted(v) for k, v in groups.items()} == {ta.series_uid: sorted(a), tb.series_uid: sorted(b)}
    assert "notes.txt is not a readable DICOM file" in caplog.text


def _duplicate(paths: list[Path], folder: Path, **changes: object) -> list[Path]:
    """Copy every instance with a new SOPInstanceUID, inverted pixels and changed attributes."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PixelData = (4095 - ds.pixel_array).astype(np.uint16).tobytes()
        for key, value in changes.items():
            setattr(ds, key, value)
        target = folder / f"dup_{path.name}"
        ds.save_as(target)
        out.append(target)
    return out


def test_split_by_temporal_position(tmp_path: Path) -> None:
    paths, truth = make_series(tmp_path / "t1", shape=(12, 10, 5))
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.TemporalPositionIdentifier = 1
        ds.save_as(path)
    second = _duplicate(paths, tmp_path / "t2", TemporalPositionIdentifier=2)
    vols = read_series([*second, *paths])
    assert [v.split for v in vols] == ["t1", "t2"]
    assert np.array_equal(vols[0].data, truth.data)
    assert np.array_equal(vols[1].data, 4095 - truth.data)
    assert all(np.allclose(v.affine, truth.affine, atol=1e-6) for v in vols)


def test_split_by_b_value_and_direction(tmp_path: Path) -> None:
    paths, truths = make_dwi_series(tmp_path / "dwi", b_values=(0.0, 1000.0, 500.0))
    b1000 = [p for p in paths if float(pydicom.dcmread(p, stop_before_pixels=True).DiffusionBValue) == 1000.0]
    for path in b1000:
        ds = pydicom.dcmread(path)
        ds.DiffusionGradientOrientation = [1.0, 0.0, 0.0]
        ds.save_as(path)
    extra = _duplicate(b1000, tmp_path / "dir2", DiffusionGradientOrientation=[0.0, 1.0, 0.0])
    b0 = [p for p in paths if p not in b1000]  # b0 and b500: one direction each
    for path in b0:
        ds = pydicom.dcmread(path)
        ds.DiffusionGradientOrientation = [0.0, 0.0, 0.0]
        ds.save_as(path)
    vols = read_series([*paths, *extra])
    assert [v.split for v in vols] == ["b0_d1", "b500_d2", "b1000_d3", "b1000_d4"]
    assert np.array_equal(vols[1].data, truths[2].data)
    assert np.array_equal(vols[2].data, truths[1].data) or np.array_equal(vols[3].data, truths[1].data)
    assert {tuple(v.meta["b_vector"]) for v in vols[2:]} == {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0)}


def test_undecodable_transfer_syntax_is_refused(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path, shape=(16, 16, 3), transfer_syntax=RLELossless)
    ds = pydicom.dcmread(paths[1])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML  # video: no pixel plugin decodes it
    ds.save_as(paths[1])
    _expect_refusal(paths, "transfer syntax 'MPEG2 Main Profile / Main Level' could not be decoded")


def test_seg_and_sr_series_are_not_read_as_images(tmp_path: Path) -> None:
    """The node's own results may come back in a study: they are refused, not misread."""
    from dicom_node.io.codes import BRATS_SEGMENTS, AlgorithmSpec
    from dicom_node.io.seg import write_seg

    paths, _ = make_series(tmp_path / "src", shape=(8, 8, 3))
    (vol,) = read_series(paths)
    labels = np.zeros(vol.shape, np.uint8)
    labels[2:5, 2:5, :] = 1
    labels[3, 3, :] = 2
    seg = write_seg(labels, vol, BRATS_SEGMENTS, AlgorithmSpec("t", "1"))
    seg.save_as(tmp_path / "seg.dcm")
    with pytest.raises(SeriesReadError, match=r"series 900 .*: it is a SEG series \(a derived object\)"):
        read_series([tmp_path / "seg.dcm"])


def test_private_b_values_split_dwi(tmp_path: Path) -> None:
    """Vendor b-values without DiffusionBValue: Siemens (0019,100C) IS and Philips (2001,1003) FL as UN."""
    import struct

    from pydicom.dataelem import DataElement

    for vendor in ("siemens", "philips"):
        paths, truths = make_dwi_series(tmp_path / vendor, b_values=(0.0, 800.0))
        for path in paths:
            ds = pydicom.dcmread(path)
            b = float(ds.DiffusionBValue)
            del ds.DiffusionBValue
            if vendor == "siemens":
                ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
                ds[0x0019100C] = DataElement(0x0019100C, "UN", f"{int(b)} ".encode())
            else:
                ds.add_new(0x20010010, "LO", "Philips Imaging DD 001")
                ds[0x20011003] = DataElement(0x20011003, "UN", struct.pack("<f", b))
            ds.save_as(path)
        vols = read_series(paths)
        assert [v.split for v in vols] == ["b0", "b800"], vendor
        assert np.array_equal(vols[1].data, truths[1].data)
