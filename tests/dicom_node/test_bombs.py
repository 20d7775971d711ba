"""Bounded work per instance: deflate bombs and images that cannot be right, refused on the wire.

Everything goes through a real association (pynetdicom SCU against a started StoreSCP,
on the fast path and on pynetdicom's own): the status, that nothing was written, that
the failure was counted and answered at once, and, for deflate bombs, the peak memory.
"""

from __future__ import annotations

import io
import logging
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_preamble
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    MRImageStorage,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE

from dicom_node.audit import AuditLog
from dicom_node.imagecheck import check_image
from dicom_node.metrics import NodeMetrics
from dicom_node.scp import StoreSCP
from dicom_node.spool import Spool
from dicom_node.store import Store
from dicom_node.wire import DatasetError, scan_dataset
from tests.dicom_node.conftest import ScpNode, make_config
from tests.dicom_node.test_scp import _chunked, _raw_file
from tests.support.mrfiles import make_mr_dataset

NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)
ENCAPSULATED = (JPEGBaseline8Bit, JPEGLosslessSV1, RLELossless)
MAX_INFLATED_MB = 32


@pytest.fixture(params=[True, False], ids=["fast_reactor", "pynetdicom"])
def node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ScpNode]:
    cfg = make_config(tmp_path, fast_reactor=request.param, max_inflated_mb=MAX_INFLATED_MB)
    store, metrics = Store(cfg.db_path), NodeMetrics()
    spool = Spool(cfg.spool_dir)
    n = ScpNode(cfg, store, spool, metrics, AuditLog(cfg.audit_log_path),
                StoreSCP(cfg, store, spool, metrics, AuditLog(cfg.audit_log_path)))
    n.scp.start()
    try:
        yield n
    finally:
        n.scp.stop(grace_s=5)
        store.close()


def encode(ds: Dataset, ts: str) -> bytes:
    """The dataset (no file meta) encoded in ``ts`` (deflated: explicit VR LE, raw deflate)."""
    ds = Dataset(ds)  # a shallow copy without file_meta
    fp = DicomBytesIO()
    fp.is_little_endian = ts != ExplicitVRBigEndian
    fp.is_implicit_VR = ts == ImplicitVRLittleEndian
    write_dataset(fp, ds)
    raw = fp.getvalue()
    if ts == DeflatedExplicitVRLittleEndian:
        c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        raw = c.compress(raw) + c.flush()
    return raw


def encapsulate(ds: Dataset, n_fragments: int = 1) -> None:
    """Replace the native Pixel Data by an encapsulated one (offset table + fragments)."""
    from pydicom.encaps import encapsulate as enc

    ds.PixelData = enc([b"\xff\xd8" + b"\x00" * 62 + b"\xff\xd9"] * n_fragments) if n_fragments else (
        b"\xfe\xff\x00\xe0\x00\x00\x00\x00")
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"


def mr(study: str, n: int, **attrs: object) -> Dataset:
    ds = make_mr_dataset(study_uid=study, series_uid=str(generate_uid()), instance_number=n, size=16)
    for k, v in attrs.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    return ds


def bad_images(study: str) -> list[tuple[str, str, Dataset, int]]:
    """``(name, transfer syntax, dataset, expected status)``: 38 images that cannot be right."""
    cases: list[tuple[str, str, Dataset, int]] = []
    n = 100
    for ts in NATIVE:
        short = ts.name.split()[0]
        variants: list[tuple[str, dict[str, object]]] = [
            ("half", {}), ("double", {}), ("no_pixels", {"PixelData": None}),
            ("65535", {"Rows": 65535, "Columns": 65535}), ("bits0", {"BitsAllocated": 0}),
            ("samples2", {"SamplesPerPixel": 2}), ("stored>allocated", {"BitsStored": 17}),
            ("frames0", {"NumberOfFrames": 0}),
        ]
        for what, attrs in variants:
            n += 1
            ds = mr(study, n, **attrs)
            if what == "half":
                ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
            elif what == "double":
                ds.PixelData = ds.PixelData * 2
            cases.append((f"{short}-{what}", ts, ds, 0xA900))
    for ts in ENCAPSULATED:  # native pixels on a compressed context
        n += 1
        cases.append((f"native-on-{ts.name}", ts, mr(study, n), 0xC000))
    n += 1
    ds = mr(study, n)
    encapsulate(ds)
    cases.append(("encapsulated-on-native", ExplicitVRLittleEndian, ds, 0xC000))
    n += 1
    ds = mr(study, n)
    encapsulate(ds, n_fragments=0)
    cases.append(("encapsulated-no-fragment", JPEGBaseline8Bit, ds, 0xC000))
    n += 1
    ds = mr(study, n, Rows=0, Columns=0)
    encapsulate(ds)
    cases.append(("jpeg-rows0", JPEGBaseline8Bit, ds, 0xA900))
    return cases


def _store_all(port: int, files: list[Path], contexts: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[int, float]]:
    """Send each file on one association: ``(status, seconds to the answer)`` each."""
    ae = AE(ae_title="TESTSCU")
    for sop_class, tss in contexts:
        ae.add_requested_context(sop_class, list(tss))
    assoc = ae.associate("127.0.0.1", port, ae_title="MRINODE")
    assert assoc.is_established
    out = []
    try:
        with _chunked():
            for f in files:
                t0 = time.perf_counter()
                st = assoc.send_c_store(f)
                out.append((int(st.Status) if st else -1, time.perf_counter() - t0))
    finally:
        assoc.release()
    return out


def test_images_that_cannot_be_right_are_refused(node: ScpNode, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    study = str(generate_uid())
    folder = tmp_path / "raw"
    folder.mkdir()
    cases = bad_images(study)
    assert len(cases) == 38
    goods = [(ts, mr(study, i)) for i, ts in enumerate(NATIVE, 1)]
    files = [_raw_file(folder, MRImageStorage, ds.SOPInstanceUID, ts, encode(ds, ts)) for ts, ds in goods[:2]]
    files += [_raw_file(folder, MRImageStorage, ds.SOPInstanceUID, ts, encode(ds, ts)) for _, ts, ds, _ in cases]
    files += [_raw_file(folder, MRImageStorage, ds.SOPInstanceUID, ts, encode(ds, ts)) for ts, ds in goods[2:]]
    contexts = [(MRImageStorage, [ts]) for ts in (*NATIVE, *ENCAPSULATED)]
    with caplog.at_level(logging.WARNING):
        answers = _store_all(node.port, files, contexts)
    statuses = [s for s, _ in answers]
    assert statuses[:2] == [0, 0] and statuses[-2:] == [0, 0]
    got = {name: s for (name, _, _, _), s in zip(cases, statuses[2:-2], strict=True)}
    assert got == {name: want for name, _, _, want in cases}
    assert max(t for _, t in answers) < 1.0
    # Nothing of the refused ones was written or indexed; each failure counted; no traceback.
    assert sorted(p.name for p in node.cfg.spool_dir.rglob("*.dcm")) == sorted(
        f"{ds.SOPInstanceUID}.dcm" for _, ds in goods)
    assert node.store.count_instances() == len(goods)
    assert node.metric("mrinode_store_failures_total", {"status": "0xA900"}) == sum(
        1 for c in cases if c[3] == 0xA900)
    assert node.metric("mrinode_store_failures_total", {"status": "0xC000"}) == sum(
        1 for c in cases if c[3] == 0xC000)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def _peak_rss_reset() -> int:
    """Reset the peak RSS (VmHWM) of this process to its current RSS; return that RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS") * 1024


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _deflated_mr(study: str, n: int, pixel_mb: int) -> tuple[str, bytes]:
    """A well-formed deflated MR dataset whose Pixel Data is ``pixel_mb`` MiB of zeros (built in pieces)."""
    rows = 1024
    frames = pixel_mb // 2  # 1024 x 1024 x 16 bit = 2 MiB a frame
    ds = mr(study, n, Rows=rows, Columns=rows, NumberOfFrames=frames, PixelData=None)
    head = encode(ds, ExplicitVRLittleEndian)
    length = rows * rows * 2 * frames
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [c.compress(head + b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))]
    zeros = bytes(1 << 20)
    parts += [c.compress(zeros) for _ in range(length >> 20)]
    parts.append(c.flush())
    return str(ds.SOPInstanceUID), b"".join(parts)


def test_deflate_bombs_are_bounded(node: ScpNode, tmp_path: Path) -> None:
    study = str(generate_uid())
    folder = tmp_path / "raw"
    folder.mkdir()
    ok_uid, ok = _deflated_mr(study, 1, MAX_INFLATED_MB // 2)  # 16 MiB inflated: under the limit
    big_uid, big = _deflated_mr(study, 2, 4 * MAX_INFLATED_MB)  # 128 MiB: over it
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    junk = c.compress(bytes(64 << 20)) + c.flush()  # 64 KiB on the wire, 64 MiB of zeros inflated
    assert len(junk) < 70_000 and len(big) < 200_000
    junk_uid = str(generate_uid())
    files = [_raw_file(folder, MRImageStorage, uid, DeflatedExplicitVRLittleEndian, s)
             for uid, s in ((junk_uid, junk), (big_uid, big), (ok_uid, ok))]
    del ok, big, junk
    base = _peak_rss_reset()
    answers = _store_all(node.port, files, [(MRImageStorage, [DeflatedExplicitVRLittleEndian])])
    grown_mb = (_status_kb("VmHWM") * 1024 - base) / 2**20
    # The inflated bytes are never held: the peak grew by far less than the 16 MiB accepted
    # instance, let alone the 64 and 128 MiB bombs.
    assert grown_mb < 12, f"peak RSS grew by {grown_mb:.0f} MiB"
    assert [s for s, _ in answers] == [0xC000, 0xA700, 0x0000]
    assert max(t for _, t in answers) < 5.0
    assert [p.name for p in node.cfg.spool_dir.rglob("*.dcm")] == [f"{ok_uid}.dcm"]
    assert node.metric("mrinode_store_failures_total", {"status": "0xA700"}) == 1


def test_scanner_inflates_in_pieces_and_stops_at_the_limit() -> None:
    study = str(generate_uid())
    _, stream = _deflated_mr(study, 1, 8)
    info = scan_dataset(stream, DeflatedExplicitVRLittleEndian)
    assert info.pixel_length == 8 << 20 and info.rows == 1024 and info.frames == "4"
    with pytest.raises(DatasetError, match="max_inflated_mb") as e:
        scan_dataset(stream, DeflatedExplicitVRLittleEndian, max_inflated=4 << 20)
    assert e.value.status == 0xA700
    for cut in (len(stream) // 2, len(stream) - 3):  # a cut deflate stream is refused, not taken as short
        with pytest.raises(DatasetError) as e:
            scan_dataset(stream[:cut], DeflatedExplicitVRLittleEndian)
        assert e.value.status == 0xC000


def _split(path: str) -> tuple[str, str, bytes]:
    data = Path(path).read_bytes()
    fp = io.BytesIO(data)
    read_preamble(fp, False)
    meta = pydicom.filereader._read_file_meta_info(fp)
    return str(meta.TransferSyntaxUID), str(meta.get("MediaStorageSOPClassUID", "")), data[fp.tell():]


def test_check_refuses_nothing_pydicom_can_decode() -> None:
    """Over pydicom's test files: every image the check refuses is one pydicom cannot decode either."""
    folder = Path(get_testdata_file("MR_small.dcm") or "").parent
    accepted = refused = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ts, sop_class, body = _split(str(path))
            info = scan_dataset(body, ts)
        except Exception:  # not Part 10, or refused by the scanner already (tested elsewhere)
            continue
        try:
            check_image(info, ts, info.sop_class or sop_class)
            accepted += 1
        except DatasetError:
            refused += 1
            with pytest.raises(Exception):  # noqa: B017 - any decoding error
                _ = pydicom.dcmread(path).pixel_array
    assert accepted >= 100 and refused >= 1
