"""identify_study and ``mrinode identify`` on folders with MR, non-MR and broken files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicom_node.identify import identify_study


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> Path:
    for name in ("MR_small.dcm", "CT_small.dcm", "emri_small.dcm"):
        src = get_testdata_file(name)
        assert src is not None
        shutil.copy(src, tmp_path / name)
    (tmp_path / "notes.txt").write_text("a sidecar: skipped silently")
    (tmp_path / "garbage.dcm").write_text("not DICOM at all")
    (tmp_path / "empty.dcm").write_bytes(b"")
    # an MR file whose pixel data is cut short (a broken transfer)
    src = get_testdata_file("MR_small.dcm")
    assert src is not None
    ds = pydicom.dcmread(src)
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesNumber = 7
    ds.SeriesDescription = "t2_tse_tra"
    ds.save_as(tmp_path / "broken.dcm")
    data = (tmp_path / "broken.dcm").read_bytes()
    (tmp_path / "broken.dcm").write_bytes(data[: len(data) - 3000])
    return tmp_path


def test_identify_study_reports_every_series_without_raising(mixed_folder: Path) -> None:
    rows = identify_study(mixed_folder, use_pixels=False)
    by_desc = {(r.modality, r.series_number, r.description): r for r in rows}
    ct = [r for r in rows if r.modality == "CT"]
    assert len(ct) == 1 and ct[0].label.value == "UNKNOWN" and ct[0].error and "not MR" in ct[0].error
    mr_small = [r for r in rows if r.modality == "MR" and r.n_instances == 1 and r.description == "" and r.label.value == "T2"]
    assert mr_small, by_desc
    broken = [r for r in rows if r.series_number == 7]
    assert broken and broken[0].label.value == "T2"  # headers still readable
    unreadable = [r for r in rows if r.series_uid == ""]
    assert len(unreadable) == 1 and unreadable[0].n_instances == 2 and unreadable[0].error
    assert "garbage.dcm" in unreadable[0].error and "empty.dcm" in unreadable[0].error
    assert "notes.txt" not in unreadable[0].error


def test_identify_study_with_pixels_survives_truncated_pixels(mixed_folder: Path) -> None:
    rows = identify_study(mixed_folder, use_pixels=True)
    assert {r.label.value for r in rows if r.series_number == 7} <= {"T2", "UNKNOWN"}
    assert all(r.error is None or isinstance(r.error, str) for r in rows)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicom_node", "identify", *args], capture_output=True, text=True, check=False)


def test_cli_json_and_table(mixed_folder: Path) -> None:
    proc = _cli(str(mixed_folder), "--json", "--headers-only")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {d["modality"] for d in data} >= {"MR", "CT"}
    for d in data:
        assert set(d) >= {"series_uid", "series_number", "description", "label", "confidence", "evidence", "source", "error"}
        assert 0.0 <= d["confidence"] <= 1.0
    table = _cli(str(mixed_folder), "--headers-only")
    assert table.returncode == 0, table.stderr
    assert "T2" in table.stdout and "Traceback" not in table.stderr + table.stdout


def test_cli_missing_path_is_a_sentence(tmp_path: Path) -> None:
    proc = _cli(str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    empty = _cli(str(tmp_path))
    assert empty.returncode == 1 and "no DICOM series" in empty.stderr


def test_malformed_headers_do_not_raise(tmp_path: Path) -> None:
    src = get_testdata_file("MR_small.dcm")
    assert src is not None
    for i in range(3):
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        # wrong VRs as a broken writer would leave them: text where numbers belong
        del ds.InstanceNumber
        ds.add_new(0x00200013, "LO", "x" if i == 0 else str(i))
        del ds.RepetitionTime
        ds.add_new(0x00180080, "LO", "abc")
        ds.ImageOrientationPatient = [1, 0, 0]
        ds.SequenceVariant = ""
        ds.save_as(tmp_path / f"im{i}.dcm", enforce_file_format=False)
    rows = identify_study(tmp_path, use_pixels=True)
    assert len(rows) == 1
    assert rows[0].identification.label.value in {"UNKNOWN", "T2"}
