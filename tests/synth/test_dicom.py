"""The DICOM study: dciodvfy on every series kind and vendor, headers, determinism, and read-back
through the project's own reader (``dicom_node.io.reader.read_series``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.sequences import SequenceLabel as S
from tests.support.dciodvfy import dciodvfy
from tests.synth.conftest import ALL_SEQUENCES


@pytest.fixture(scope="module")
def siemens_study(tumour_subject, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The study written series by series (as write_study does), keeping the acquired stacks."""
    from training.synth.dicom_writer import series_folder_name, write_series

    out = tmp_path_factory.mktemp("siemens")
    folders, acquired = {}, {}
    for index, seq in enumerate(ALL_SEQUENCES, start=1):
        acquired[seq.value] = tumour_subject.acquire(seq)
        folders[seq.value] = out / series_folder_name(index, seq.value)
        write_series(tumour_subject, acquired[seq.value], folders[seq.value], index)
    return tumour_subject, folders, acquired


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("IM_*.dcm"))


def _check_dciodvfy(folders: dict[str, Path]) -> None:
    checked = 0
    for seq, folder in folders.items():
        files = _files(folder)
        assert files, f"{seq} has no files"
        # first and last instance: covers both b-values of DWI and two localizer planes
        for f in {files[0], files[-1], files[len(files) // 2]}:
            report = dciodvfy(f)
            assert report.errors == [], f"{seq} {f.name}: {report.errors}"
            checked += 1
    assert checked >= 2 * len(folders)


def test_siemens_study_passes_dciodvfy(siemens_study) -> None:  # type: ignore[no-untyped-def]
    _subject, folders, _ = siemens_study
    assert set(folders) == {s.value for s in ALL_SEQUENCES}
    _check_dciodvfy(folders)


@pytest.mark.parametrize("vendor", ["ge", "philips"])
def test_other_vendors_pass_dciodvfy(vendor: str, tmp_path: Path) -> None:
    from training.synth import generate_subject
    from training.synth.dicom_writer import write_study

    seqs = (S.LOCALIZER, S.T1C, S.T2, S.FLAIR, S.DWI, S.ADC, S.SWI)  # every vendor-specific kind
    s = generate_subject(31, vendor=vendor, sequences=seqs, voxel_mm=4.0, tumour=True, field_strength=1.5)
    folders = write_study(s, tmp_path)
    _check_dciodvfy(folders)
    ds = pydicom.dcmread(_files(folders["DWI"])[-1])
    if vendor == "ge":
        assert ds.Manufacturer == "GE MEDICAL SYSTEMS"
        assert str(ds[0x0043, 0x1039].value[0]) == "1000"
    else:
        assert ds.Manufacturer.startswith("Philips")
        assert float(ds[0x2001, 0x1003].value) == 1000.0


def test_headers(siemens_study) -> None:  # type: ignore[no-untyped-def]
    subject, folders, _ = siemens_study
    firsts = {seq: pydicom.dcmread(_files(f)[0], stop_before_pixels=True) for seq, f in folders.items()}
    assert len({ds.StudyInstanceUID for ds in firsts.values()}) == 1
    assert len({ds.FrameOfReferenceUID for ds in firsts.values()}) == 1
    assert len({ds.SeriesInstanceUID for ds in firsts.values()}) == len(firsts)
    for seq, ds in firsts.items():
        proto = subject.protocols[S(seq)]
        assert ds.Modality == "MR" and ds.Manufacturer == "SIEMENS"
        assert float(ds.RepetitionTime) == pytest.approx(proto.tr)
        assert float(ds.EchoTime) == pytest.approx(proto.te)
        assert ds.MRAcquisitionType == proto.acquisition
        assert ("ContrastBolusAgent" in ds) == (seq == "T1C")
    assert float(firsts["FLAIR"].InversionTime) == pytest.approx(subject.protocols[S.FLAIR].ti)
    assert "tirm" in firsts["FLAIR"].SeriesDescription
    dwi = [pydicom.dcmread(f, stop_before_pixels=True) for f in _files(folders["DWI"])]
    assert sorted({float(d.DiffusionBValue) for d in dwi}) == [0.0, 1000.0]
    assert {int(d[0x0019, 0x100C].value) for d in dwi} == {0, 1000}
    assert "ADC" in firsts["ADC"].ImageType
    assert firsts["ADC"].ImageType[0] == "DERIVED"


def test_same_seed_writes_identical_files(tmp_path: Path) -> None:
    from training.synth import generate_subject
    from training.synth.dicom_writer import write_study

    paths = []
    for name in ("a", "b"):
        s = generate_subject(33, sequences=(S.DWI,), voxel_mm=4.0, tumour=False)
        paths.append(write_study(s, tmp_path / name)["DWI"])
    a, b = _files(paths[0]), _files(paths[1])
    assert [p.name for p in a] == [p.name for p in b]
    for fa, fb in zip(a[:: max(len(a) // 5, 1)], b[:: max(len(b) // 5, 1)], strict=True):
        assert fa.read_bytes() == fb.read_bytes()


def test_read_back_through_project_reader(siemens_study) -> None:  # type: ignore[no-untyped-def]
    from dicom_node.io.reader import read_series

    _subject, folders, acquired = siemens_study
    for seq, folder in folders.items():
        series = acquired[seq]
        files = _files(folder)
        if seq == "LOCALIZER":
            # one series, three planes: read each plane's slices on their own
            n = series.stacks[0].data.shape[2]
            groups = [files[i * n:(i + 1) * n] for i in range(len(series.stacks))]
            volumes = [read_series(g)[0] for g in groups]
        else:
            volumes = read_series(files)
        assert len(volumes) == len(series.stacks), seq
        by_key = {v.split or "": v for v in volumes}
        for i, stack in enumerate(series.stacks):
            vol = by_key.get(stack.key, volumes[i]) if seq != "LOCALIZER" else volumes[i]
            assert vol.data.shape == stack.data.shape, seq
            assert np.allclose(vol.affine, stack.affine, atol=1e-3), seq
            assert np.max(np.abs(vol.data - stack.data)) <= 0.5, seq
            assert vol.frame_of_reference_uid is not None
    # the labels resampled to the acquired grid sit on the lesion in the read-back images
    flair = read_series(_files(folders["FLAIR"]))[0]
    labels = acquired["FLAIR"].stacks[0].labels
    assert (labels == 2).sum() > 10
    assert flair.data[labels == 2].mean() > 1.3 * flair.data[(labels == 0) & (flair.data > 0.2 * flair.data.max())].mean()
    t1c = read_series(_files(folders["T1C"]))[0]
    lab_c = acquired["T1C"].stacks[0].labels
    t1 = read_series(_files(folders["T1"]))[0]
    lab_1 = acquired["T1"].stacks[0].labels
    assert (t1c.data[lab_c == 3].mean() / np.median(t1c.data[lab_c == 2])) > 1.2 * (
        t1.data[lab_1 == 3].mean() / np.median(t1.data[lab_1 == 2])
    )


def _agreement(vol_data: np.ndarray, vol_affine: np.ndarray, image: np.ndarray, image_affine: np.ndarray) -> float:
    """Correlation between read-back pixels and the subject image sampled at the same
    patient positions (through the reader's affine)."""
    from scipy import ndimage as ndi

    idx = np.argwhere(np.ones(vol_data.shape, dtype=bool)[::3, ::3, :]) * np.array([3, 3, 1])
    ras = idx @ vol_affine[:3, :3].T + vol_affine[:3, 3]
    inv = np.linalg.inv(image_affine)
    src = (ras @ inv[:3, :3].T + inv[:3, 3]).T
    ref = ndi.map_coordinates(image, src, order=1, cval=0.0)
    got = vol_data[idx[:, 0], idx[:, 1], idx[:, 2]]
    return float(np.corrcoef(got, ref)[0, 1])


def test_read_back_geometry_matches_the_anatomy(siemens_study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The read-back pixels, placed in patient space by the reader's affine, agree with the
    subject image on its own grid, for every plane written (a check independent of the
    writer's geometry); mirrored pixels agree clearly less, so the check can fail."""
    from dataclasses import replace

    from dicom_node.io.reader import read_series
    from training.synth.dicom_writer import write_series

    subject, folders, _ = siemens_study
    # add a coronal T2 so that all three planes are checked
    coronal = replace(subject, protocols={**subject.protocols, S.T2: replace(subject.protocols[S.T2], plane="coronal")})
    write_series(coronal, coronal.acquire(S.T2), tmp_path / "cor", 99)
    folders = {**folders, "T2_COR": tmp_path / "cor"}
    planes = set()
    for name in ("T1", "T2", "FLAIR", "SWI", "T1C", "T2_COR"):
        seq = S(name.removesuffix("_COR"))
        vol = read_series(_files(folders[name]))[0]
        planes.add("coronal" if name == "T2_COR" else subject.protocols[seq].plane)
        good = _agreement(vol.data, vol.affine, subject.images[seq], subject.affine)
        mirrored = _agreement(vol.data[::-1], vol.affine, subject.images[seq], subject.affine)
        assert good > 0.95, (name, good)
        assert good > mirrored + 0.1, (name, good, mirrored)
    assert {"axial", "coronal"} <= planes
    files = _files(folders["LOCALIZER"])
    for plane_index in range(3):
        vol = read_series(files[plane_index * 3:(plane_index + 1) * 3])[0]
        assert _agreement(vol.data, vol.affine, subject.images[S.LOCALIZER], subject.affine) > 0.95
