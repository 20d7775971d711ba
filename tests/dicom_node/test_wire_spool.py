"""Wire check of received datasets, the file-meta encoder and the atomic spool."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filereader import read_preamble

from dicom_node.spool import Spool, safe_name
from dicom_node.wire import DatasetError, encode_file_meta, scan_dataset
from tests.support.dciodvfy import dciodvfy
from tests.support.mrfiles import write_mr_series


def _body(path: object) -> tuple[str, bytes]:
    data = Path(str(path)).read_bytes()
    fp = io.BytesIO(data)
    read_preamble(fp, False)
    meta = pydicom.filereader._read_file_meta_info(fp)
    return str(meta.TransferSyntaxUID), data[fp.tell():]


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                                  "image_dfl.dcm", "MR_small_RLE.dcm", "JPEG-LL.dcm", "rtplan.dcm"])
def test_scan_reads_identifying_values(name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    ts, body = _body(path)
    info = scan_dataset(body, ts)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert info.sop_uid == ds.SOPInstanceUID and info.sop_class == ds.SOPClassUID
    assert info.study_uid == ds.StudyInstanceUID and info.modality == ds.get("Modality", "")


@pytest.mark.parametrize(("name", "message"), [("MR_truncated.dcm", "truncated"), ("rtplan_truncated.dcm", "truncated")])
def test_scan_rejects_truncated_files(name: str, message: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    ts, body = _body(path)
    with pytest.raises(DatasetError, match=message):
        scan_dataset(body, ts)


def test_scan_rejects_empty_and_cut_streams() -> None:
    path = get_testdata_file("MR_small.dcm")
    assert path is not None
    ts, body = _body(path)
    with pytest.raises(DatasetError, match="empty"):
        scan_dataset(b"", ts)
    for cut in (3, 9, 201, len(body) - 1):  # inside an element (a cut between elements cannot be seen)
        with pytest.raises(DatasetError):
            scan_dataset(body[:cut], ts)


def test_encoded_file_meta_is_valid(tmp_path: Path) -> None:
    _, paths = write_mr_series(tmp_path / "in", 1)
    ts, body = _body(str(paths[0]))
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    head = encode_file_meta(ds.SOPClassUID, ds.SOPInstanceUID, ts, "1.2.826.0.1.3680043.9.3811.3.0.4",
                            "PYNETDICOM_304", "STORESCU")
    out = tmp_path / "out.dcm"
    out.write_bytes(head + body)
    again = pydicom.dcmread(out)
    assert again.file_meta.SourceApplicationEntityTitle == "STORESCU"
    assert again.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert dciodvfy(out).errors == []


@pytest.mark.parametrize("mode", ["file", "file+dir", "off"])
def test_spool_writes_atomically_and_replaces(tmp_path: Path, mode: str) -> None:
    spool = Spool(tmp_path / "spool", fsync=mode)
    path, size = spool.write("1.2.3", "1.2.3.4", [b"ab", b"cd"])
    assert path.read_bytes() == b"abcd" and size == 4
    path2, _ = spool.write("1.2.3", "1.2.3.4", [b"xyz"])
    assert path2 == path and path.read_bytes() == b"xyz"
    assert sorted(p.name for p in path.parent.iterdir()) == ["1.2.3.4.dcm"]


def test_spool_names_cannot_escape(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    path, _ = spool.write("../../etc", "a/b", [b"x"])
    assert path.resolve().is_relative_to((tmp_path / "spool").resolve())
    assert safe_name("1.2.3") == "1.2.3" and safe_name("..").startswith("h")
    with pytest.raises(ValueError, match="fsync mode"):
        Spool(tmp_path / "s", fsync="sometimes")


def test_spool_write_failing_after_the_rename_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    spool = Spool(tmp_path / "spool", fsync="file")
    kept, _ = spool.write("1.2.3", "1.2.3.1", [b"ok"])  # the study folder exists (and was fsynced)

    def eio(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)  # "file" mode fsyncs after the rename
    with pytest.raises(OSError):
        spool.write("1.2.3", "1.2.3.4", [b"abcd"])
    assert [p for p in (tmp_path / "spool").rglob("*") if p.is_file()] == [kept]


def test_free_space_is_checked_at_most_once_a_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from dicom_node.diskspace import FreeSpace

    calls = []
    real = os.statvfs

    def counting(path: object) -> os.statvfs_result:
        calls.append(path)
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "statvfs", counting)
    space = FreeSpace(tmp_path, min_free_bytes=1 << 60)  # more than any disk: low
    assert all(space.low() for _ in range(10_000))
    assert len(calls) == 1 and space.free_bytes() > 0
    space.wrote(space.recheck_bytes)  # a lot written since: the next question looks again
    assert space.low() and len(calls) == 2
    space.min_free_bytes = 0
    space.refresh(force=True)
    assert not space.low()


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 4096])
def test_inflating_scan_agrees_with_the_in_memory_scan(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deflated walk moves its window in tiny steps here: every element straddles one."""
    import random
    import zlib

    from dicom_node import wire

    monkeypatch.setattr(wire, "_CHUNK", chunk)
    explicit, deflated = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"
    rng = random.Random(chunk)
    bodies = []
    for name in ("MR_small.dcm", "rtplan.dcm", "JPEG-LL.dcm", "SC_rgb.dcm", "CT_small.dcm"):
        path = get_testdata_file(name)
        assert path is not None
        ts, body = _body(path)
        if ts == explicit:
            bodies.append(body)
    assert len(bodies) >= 3
    cases = []
    for body in bodies:
        cases.append(body)
        for _ in range(40):  # damaged copies: one byte changed, or cut
            b = bytearray(body)
            if rng.random() < 0.5:
                b[rng.randrange(len(b))] = rng.randrange(256)
            else:
                del b[rng.randrange(1, len(b)):]
            cases.append(bytes(b))

    def outcome(stream: bytes, ts: str) -> object:
        try:
            return scan_dataset(stream, ts)
        except DatasetError:
            return DatasetError

    for body in cases:
        c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        assert outcome(c.compress(body) + c.flush(), deflated) == outcome(body, explicit)
