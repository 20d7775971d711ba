"""The real MR files that pydicom, pydicom-data and nibabel ship convert or fail clearly."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import pytest
from pydicom.data import get_testdata_file

from dicom_node.cli import main
from dicom_node.cli.convert import convert_folder

NIBABEL_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"

#: Exact names only: a wildcard search would try to download.
PYDICOM_MR = [
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
    "MR_truncated.dcm",
    "MR2_J2KI.dcm",
    "MR2_J2KR.dcm",
    "MR2_UNCI.dcm",
    "MR2_UNCR.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
    "emri_small.dcm",
    "emri_small_RLE.dcm",
    "emri_small_big_endian.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_jpeg_2k_lossless_too_short.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
]

NIBABEL_MR = [
    "0.dcm",
    "1.dcm",
    "csa_slice_norm.dcm",
    "decimal_rescale.dcm",
    "slicethickness_empty_string.dcm",
    "siemens_dwi_0.dcm.gz",
    "siemens_dwi_1000.dcm.gz",
    "philips_mprage.dcm.gz",
]

#: What each file must do: "ok" (converted) or a fragment of its refusal message.
EXPECTED = {
    "MR_truncated.dcm": "could not be decoded",
    "emri_small.dcm": "no per-frame functional groups",
    "emri_small_RLE.dcm": "no per-frame functional groups",
    "emri_small_big_endian.dcm": "no per-frame functional groups",
    "emri_small_jpeg_2k_lossless.dcm": "no per-frame functional groups",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated",
    "emri_small_jpeg_ls_lossless.dcm": "no per-frame functional groups",
    "0.dcm": "cannot hold 48 tiles",
    "1.dcm": "cannot hold 48 tiles",
    "csa_slice_norm.dcm": "no pixel data",
    "decimal_rescale.dcm": "skipped: no SeriesInstanceUID",
}


def _stage(name: str, folder: Path) -> None:
    folder.mkdir(parents=True)
    if name in NIBABEL_MR:
        src = NIBABEL_DATA / name
        if name.endswith(".gz"):
            with gzip.open(src) as fin:
                (folder / name.removesuffix(".gz")).write_bytes(fin.read())
        else:
            shutil.copy(src, folder / name)
    else:
        path = get_testdata_file(name)
        assert path is not None, f"{name} is not installed (pydicom-data)"
        shutil.copy(path, folder / name)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the broken files on purpose
@pytest.mark.parametrize("name", PYDICOM_MR + NIBABEL_MR)
def test_converts_or_fails_clearly(tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    _stage(name, tmp_path / "in")
    written, problems = convert_folder(tmp_path / "in", tmp_path / "out")
    expected = EXPECTED.get(name, "ok")
    if expected.startswith("skipped"):
        assert written == [] and problems == []
        assert f"{name} has no SeriesInstanceUID (not an image instance); skipped." in caplog.text
    elif expected == "ok":
        assert problems == [] and len(written) == 1
        assert written[0].with_suffix("").with_suffix(".json").exists()
        img = nib.load(written[0])
        assert img.header.get_sform(coded=True)[1] == 1
    else:
        assert written == []
        assert len(problems) == 1
        assert problems[0].startswith("Cannot read series ") and expected in problems[0], problems[0]
        assert "unexpected" not in problems[0]


def test_cli_on_mixed_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("MR2_UNCR.dcm", "MR_truncated.dcm", "emri_small.dcm"):
        _stage(name, tmp_path / "in" / name)
    (tmp_path / "in" / "readme.txt").write_text("not DICOM")
    assert main(["convert", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    out = capsys.readouterr()
    assert "converted 1 volume(s); 2 series skipped." in out.out
    assert out.err.count("skipped: Cannot read series") == 2
    assert "Traceback" not in out.err + out.out


def test_cli_nothing_converted_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _stage("MR_truncated.dcm", tmp_path / "in")
    assert main(["convert", str(tmp_path / "in"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "nothing converted" in err and "all 1 series were refused" in err


def test_cli_dicomdir_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pydicom's DICOMDIR test tree: the DICOMDIR is skipped, its MR/CT series are handled."""
    dicomdir = get_testdata_file("DICOMDIR")
    assert dicomdir is not None
    shutil.copytree(Path(dicomdir).parent, tmp_path / "in")
    code = main(["convert", str(tmp_path / "in"), str(tmp_path / "out")])
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    assert "unexpected" not in out.err
    assert code == 0 and len(list((tmp_path / "out").glob("*.nii.gz"))) >= 1
