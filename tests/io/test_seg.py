"""DICOM-SEG: round trip lands on the same voxels; references and codes; dciodvfy clean."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_node.io.codes import BRAIN, BRATS_SEGMENTS, AlgorithmSpec
from dicom_node.io.reader import read_series
from dicom_node.io.seg import read_seg_labels, write_seg
from dicom_node.io.volume import Volume
from tests.io.series_factory import ORIENTATIONS, make_enhanced_series, make_mosaic_series, make_series
from tests.support.dciodvfy import dciodvfy

ALGORITHM = AlgorithmSpec(name="tiny-synthetic-segmenter", version="0.1.0", source="mrinode tests")


def _labels(vol: Volume, seed: int = 0) -> np.ndarray:
    """An asymmetric label volume (no flip or shift maps it onto itself)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(vol.shape, dtype=np.uint8)
    ni, nj, nk = vol.shape
    labels[2 : ni // 2, 1 : nj // 3, 1 : nk - 2] = 2
    labels[3 : ni // 3, 2 : nj // 4 + 2, 2 : nk // 2] = 1
    labels[ni - 5 : ni - 1, nj - 4 : nj - 1, nk - 2] = 3
    labels[rng.random(vol.shape) > 0.97] = 3
    labels[:, :, 0] = 0  # an empty slice, so a frame is omitted
    return labels


def _round_trip(tmp_path: Path, vol: Volume, labels: np.ndarray, **kwargs: object) -> pydicom.Dataset:
    seg = write_seg(labels, vol, BRATS_SEGMENTS, ALGORITHM, **kwargs)  # type: ignore[arg-type]
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    back = read_seg_labels(pydicom.dcmread(path), vol, BRATS_SEGMENTS)
    assert back.shape == labels.shape
    assert np.array_equal(back, labels)
    return pydicom.dcmread(path)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("order", ["with", "against"])
def test_round_trip_exact_and_valid(tmp_path: Path, orientation: str, order: str) -> None:
    paths, _ = make_series(tmp_path / "src", orientation=orientation, instance_order=order)
    (vol,) = read_series(paths)
    labels = _labels(vol)
    seg = _round_trip(tmp_path, vol, labels)
    report = dciodvfy(tmp_path / "seg.dcm")
    assert report.errors == [] and report.warnings == [], report.output
    # Empty frames are omitted: slice 0 has no label, so fewer frames than slices x segments.
    assert int(seg.NumberOfFrames) < vol.shape[2] * len(BRATS_SEGMENTS)
    assert seg.FrameOfReferenceUID == vol.frame_of_reference_uid
    assert seg.StudyInstanceUID == vol.meta["study_uid"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == vol.series_uid
    referenced = {
        item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {ref[1] for ref in vol.slice_refs}


def test_segment_descriptions_codes_colours_algorithm(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path / "src")
    (vol,) = read_series(paths)
    seg = _round_trip(tmp_path, vol, _labels(vol))
    items = list(seg.SegmentSequence)
    assert [i.SegmentLabel for i in items] == ["Necrotic core", "Oedema", "Enhancing tumour"]
    assert [i.SegmentedPropertyTypeCodeSequence[0].CodeValue for i in items] == [
        "6574001",
        "79654002",
        "108369006",
    ]
    assert {i.SegmentedPropertyCategoryCodeSequence[0].CodeValue for i in items} == {"49755003"}
    assert all(i.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT" for i in items)
    colours = [
        tuple(hd.color.CIELabColor.from_dicom_value(i.RecommendedDisplayCIELabValue).to_rgb()) for i in items
    ]
    for got, spec in zip(colours, BRATS_SEGMENTS, strict=True):
        assert np.allclose(got, spec.rgb, atol=2), (got, spec.rgb)
    algo = items[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == (ALGORITHM.name, ALGORITHM.version)
    assert items[0].SegmentAlgorithmType == "AUTOMATIC"
    assert seg.SegmentationType == "BINARY"
    assert seg.SeriesNumber == 900


def test_frames_reference_their_source_images(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path / "src", orientation="oblique", instance_order="random")
    (vol,) = read_series(paths)
    labels = _labels(vol)
    seg = _round_trip(tmp_path, vol, labels)
    uid_to_k = {ref[1]: k for k, ref in enumerate(vol.slice_refs)}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = uid_to_k[source]
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        expected = vol.affine_lps @ np.array([0, 0, k, 1.0])
        assert np.allclose(position, expected[:3], atol=1e-3)
        segment = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        assert np.any(labels[:, :, k] == BRATS_SEGMENTS[segment - 1].label_value)


def test_enhanced_source_round_trip(tmp_path: Path) -> None:
    paths, _ = make_enhanced_series(tmp_path / "src")
    (vol,) = read_series(paths)
    _round_trip(tmp_path, vol, _labels(vol, seed=2))
    report = dciodvfy(tmp_path / "seg.dcm")
    assert report.errors == [], report.output
    assert report.warnings == [], report.output


def test_labelmap_option_round_trip(tmp_path: Path) -> None:
    """LABELMAP SEG (Label Map Segmentation Storage, 2024) round-trips; see README for dciodvfy."""
    paths, _ = make_series(tmp_path / "src", orientation="sagittal")
    (vol,) = read_series(paths)
    seg = _round_trip(tmp_path, vol, _labels(vol), labelmap=True)
    assert seg.SegmentationType == "LABELMAP"
    assert int(seg.NumberOfFrames) == vol.shape[2]
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"  # Label Map Segmentation Storage
    # dicom3tools 1.00~20220618 predates Label Map Segmentation (Sup 243, 2024): it does not
    # know the SOP class and refuses the background segment 0 that the IOD defines. Any
    # other error would fail here.
    known = {
        "Error - Information Object Not found",
        "Error - </SegmentSequence(0062,0002)[1]/SegmentNumber(0062,0004)> - SegmentNumber not monotonically "
        "increasing from one by one - have SegmentSequence item number 1 (from one) with SegmentNumber of 0",
    }
    assert set(dciodvfy(tmp_path / "seg.dcm").errors) <= known


def test_single_segment_with_other_label_value(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path / "src", orientation="coronal")
    (vol,) = read_series(paths)
    spec = replace(BRAIN, label_value=7)
    labels = (_labels(vol) > 0).astype(np.int16) * 7
    seg = write_seg(labels, vol, [spec], ALGORITHM, series_number=950)
    assert np.array_equal(read_seg_labels(seg, vol, [spec]), labels)
    assert seg.SegmentSequence[0].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"


def test_empty_label_volume_still_writes(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path / "src", shape=(8, 8, 3))
    (vol,) = read_series(paths)
    labels = np.zeros(vol.shape, dtype=np.uint8)
    seg = write_seg(labels, vol, BRATS_SEGMENTS, ALGORITHM)
    seg.save_as(tmp_path / "empty.dcm")
    assert np.array_equal(read_seg_labels(seg, vol, BRATS_SEGMENTS), labels)
    assert dciodvfy(tmp_path / "empty.dcm").errors == []


def test_bad_inputs_are_refused_with_sentences(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path / "src", shape=(8, 8, 3))
    (vol,) = read_series(paths)
    with pytest.raises(ValueError, match="differs from series 3"):
        write_seg(np.zeros((8, 8, 4), np.uint8), vol, BRATS_SEGMENTS, ALGORITHM)
    bad = np.zeros(vol.shape, np.uint8)
    bad[0, 0, 0] = 9
    with pytest.raises(ValueError, match=r"values \[9\] that no segment describes"):
        write_seg(bad, vol, BRATS_SEGMENTS, ALGORITHM)
    with pytest.raises(ValueError, match="negative values"):
        write_seg(np.full(vol.shape, -1, np.int16), vol, BRATS_SEGMENTS, ALGORITHM)
    bad[0, 0, 0] = 4  # above the segments 1..3: the fast path must still refuse it
    with pytest.raises(ValueError, match=r"values \[4\] that no segment describes"):
        write_seg(bad, vol, BRATS_SEGMENTS, ALGORITHM)
    mosaic_paths, _ = make_mosaic_series(tmp_path / "mosaic")
    (mosaic,) = read_series(mosaic_paths)
    with pytest.raises(ValueError, match="mosaic"):
        write_seg(np.zeros(mosaic.shape, np.uint8), mosaic, BRATS_SEGMENTS, ALGORITHM)


def test_segments_without_voxels_are_described_but_have_no_frames(tmp_path: Path) -> None:
    paths, _ = make_series(tmp_path / "src", shape=(8, 8, 4))
    (vol,) = read_series(paths)
    labels = np.zeros(vol.shape, np.uint8)
    labels[1:3, 1:3, 1] = 2
    seg = write_seg(labels, vol, BRATS_SEGMENTS, ALGORITHM)
    seg.save_as(tmp_path / "sparse.dcm")
    assert int(seg.NumberOfFrames) == 1 and len(seg.SegmentSequence) == 3
    assert np.array_equal(
        read_seg_labels(pydicom.dcmread(tmp_path / "sparse.dcm"), vol, BRATS_SEGMENTS), labels
    )
    report = dciodvfy(tmp_path / "sparse.dcm")
    assert report.errors == [] and report.warnings == [], report.output


@pytest.mark.parametrize("name", ["philips_mprage.dcm.gz", "MR2_UNCR.dcm"])
def test_round_trip_on_real_vendor_files(tmp_path: Path, name: str) -> None:
    """Philips Enhanced MR (geometry in per-frame groups only) and a 1024^2 single slice."""
    import gzip

    import nibabel as nib
    from pydicom.data import get_testdata_file

    if name.endswith(".gz"):
        source = tmp_path / "source.dcm"
        with gzip.open(Path(nib.__file__).parent / "nicom" / "tests" / "data" / name) as fin:
            source.write_bytes(fin.read())
    else:
        found = get_testdata_file(name)
        assert found is not None
        source = Path(found)
    (vol,) = read_series([source])
    labels = np.zeros(vol.shape, np.uint8)
    ni, nj, nk = vol.shape
    labels[ni // 4 : ni // 2, nj // 3 : nj // 2, nk // 2] = 2
    labels[ni // 3 : ni // 3 + 5, nj // 3 : nj // 3 + 4, nk // 2] = 1
    _round_trip(tmp_path, vol, labels)
    report = dciodvfy(tmp_path / "seg.dcm")
    assert report.errors == [], report.output
    # What remains is inherited from the source headers (e.g. a retired Person Name form).
    assert all("Value dubious for this VR [PN]" in w for w in report.warnings), report.warnings
