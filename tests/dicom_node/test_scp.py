"""The SCP against real dcmtk tools and a raw pynetdicom SCU: storage, refusals, bad input."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import read_preamble
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pynetdicom import AE, _config

from tests.dicom_node.conftest import ScpNode
from tests.support.mrfiles import make_mr_dataset, write_mr_series

ENV = dict(os.environ, TCP_NODELAY="1")


def _dcmtk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, env=ENV, timeout=120, check=False)


def _split(path: Path) -> tuple[pydicom.Dataset, bytes]:
    """File meta and the raw dataset bytes of a Part 10 file."""
    data = path.read_bytes()
    fp = io.BytesIO(data)
    read_preamble(fp, False)
    meta = pydicom.filereader._read_file_meta_info(fp)
    return meta, data[fp.tell():]


@contextmanager
def _chunked() -> Iterator[None]:
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send file bytes as they are, no re-encoding
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old


def _raw_file(folder: Path, sop_class: str, sop_uid: str, ts: str, stream: bytes) -> Path:
    """A Part 10 file whose meta says ``sop_class``/``sop_uid``/``ts`` and whose dataset is ``stream``."""
    from pydicom.filewriter import write_file_meta_info

    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.UID(sop_class)
    meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(sop_uid)
    meta.TransferSyntaxUID = pydicom.uid.UID(ts)
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(pydicom.filebase.DicomFileLike(buf), meta, enforce_standard=True)
    path = folder / f"{sop_uid}.raw"
    path.write_bytes(buf.getvalue() + stream)
    return path


def _send(port: int, files: list[Path], contexts: Sequence[tuple[str, Sequence[str]]]) -> list[int]:
    ae = AE(ae_title="TESTSCU")
    for sop_class, tss in contexts:
        ae.add_requested_context(sop_class, list(tss))
    assoc = ae.associate("127.0.0.1", port, ae_title="MRINODE")
    assert assoc.is_established
    statuses = []
    try:
        with _chunked():
            for f in files:
                st = assoc.send_c_store(f)
                statuses.append(int(st.Status) if st else -1)
    finally:
        assoc.release()
    return statuses


def test_echoscu_and_storescu_store_every_instance(scp_node: ScpNode, tmp_path: Path) -> None:
    assert _dcmtk("echoscu", "-aec", "MRINODE", "127.0.0.1", str(scp_node.port)).returncode == 0
    study_uid, paths = write_mr_series(tmp_path / "in", 20)
    r = _dcmtk("storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(scp_node.port), str(tmp_path / "in"))
    assert r.returncode == 0, r.stderr
    assert scp_node.store.count_instances() == 20
    stored = scp_node.store.instance_paths(study_uid)
    assert len(stored) == 20
    # Bytes kept exactly: the dataset part of each spooled file equals what was sent.
    sent = {_split(p)[0].MediaStorageSOPInstanceUID: _split(p)[1] for p in paths}
    for s in stored:
        meta, body = _split(s)
        assert body == sent[meta.MediaStorageSOPInstanceUID]
        assert meta.SourceApplicationEntityTitle == "STORESCU"
    assert scp_node.metric("mrinode_instances_received_total") == 20
    study = scp_node.store.study(study_uid)
    assert study is not None and study.state == "open" and study.calling_ae == "STORESCU"
    assert [e["event"] for e in scp_node.audit.read()] == ["study_received"]


def test_repeated_instance_keeps_one_copy(scp_node: ScpNode, tmp_path: Path) -> None:
    _, paths = write_mr_series(tmp_path / "in", 3)
    for _ in range(2):
        r = _dcmtk("storescu", "-aec", "MRINODE", "127.0.0.1", str(scp_node.port), *map(str, paths))
        assert r.returncode == 0, r.stderr
    assert scp_node.store.count_instances() == 3
    assert len(list(scp_node.cfg.spool_dir.rglob("*.dcm"))) == 3
    assert not list(scp_node.cfg.spool_dir.rglob("*.tmp"))


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["-aet", "INTRUDER", "-aec", "MRINODE"], "calling_ae"),
        (["-aet", "ECHOSCU", "-aec", "NOTME"], "called_ae"),
    ],
)
def test_unknown_calling_or_called_ae_is_refused(scp_node: ScpNode, args: list[str], reason: str) -> None:
    r = _dcmtk("echoscu", *args, "127.0.0.1", str(scp_node.port))
    assert r.returncode != 0
    assert "Association Rejected" in r.stderr
    assert scp_node.metric("mrinode_associations_refused_total", {"reason": reason}) == 1


def test_caller_from_wrong_host_is_refused(tmp_path: Path) -> None:
    from dicom_node.audit import AuditLog
    from dicom_node.metrics import NodeMetrics
    from dicom_node.scp import StoreSCP
    from dicom_node.spool import Spool
    from dicom_node.store import Store
    from tests.dicom_node.conftest import make_config

    cfg = make_config(tmp_path, allowed_callers=[{"ae_title": "ECHOSCU", "host": "10.9.8.7"}])
    store, metrics = Store(cfg.db_path), NodeMetrics()
    scp = StoreSCP(cfg, store, Spool(cfg.spool_dir), metrics, AuditLog(cfg.audit_log_path))
    scp.start()
    try:
        r = _dcmtk("echoscu", "-aec", "MRINODE", "127.0.0.1", str(scp.port))
        assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stderr
        assert metrics.registry.get_sample_value("mrinode_associations_refused_total", {"reason": "host"}) == 1
    finally:
        scp.stop(grace_s=2)
        store.close()


def test_bad_input_fails_that_store_and_keeps_the_association(scp_node: ScpNode, tmp_path: Path) -> None:
    study_uid = generate_uid()
    series_uid = generate_uid()

    def mr(n: int, **kw: object) -> pydicom.Dataset:
        return make_mr_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=n, **kw)  # type: ignore[arg-type]

    def encode(ds: pydicom.Dataset, implicit: bool = False) -> bytes:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset

        del ds.file_meta
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, implicit
        write_dataset(fp, ds)
        return fp.getvalue()

    folder = tmp_path / "raw"
    folder.mkdir()
    good1, good2 = mr(1), mr(2)
    truncated = mr(3)
    no_sop = mr(4)
    no_sop_uid = no_sop.SOPInstanceUID
    del no_sop.SOPInstanceUID
    wrong_ts = mr(5)
    wrong_class = mr(6)
    zero_uid = generate_uid()
    files = [
        _raw_file(folder, MRImageStorage, good1.SOPInstanceUID, ExplicitVRLittleEndian, encode(good1)),
        _raw_file(folder, MRImageStorage, truncated.SOPInstanceUID, ExplicitVRLittleEndian, encode(truncated)[:-100]),
        _raw_file(folder, MRImageStorage, no_sop_uid, ExplicitVRLittleEndian, encode(no_sop)),
        # Explicit-VR bytes sent in an Implicit VR presentation context.
        _raw_file(folder, MRImageStorage, wrong_ts.SOPInstanceUID, ImplicitVRLittleEndian, encode(wrong_ts)),
        # An MR dataset sent as CT Image Storage.
        _raw_file(folder, CTImageStorage, wrong_class.SOPInstanceUID, ExplicitVRLittleEndian, encode(wrong_class)),
        _raw_file(folder, MRImageStorage, zero_uid, ExplicitVRLittleEndian, b""),
        _raw_file(folder, MRImageStorage, good2.SOPInstanceUID, ExplicitVRLittleEndian, encode(good2)),
    ]
    contexts = [(MRImageStorage, [ExplicitVRLittleEndian]), (MRImageStorage, [ImplicitVRLittleEndian]),
                (CTImageStorage, [ExplicitVRLittleEndian])]
    statuses = _send(scp_node.port, files, contexts)
    assert statuses[0] == 0x0000 and statuses[-1] == 0x0000
    assert statuses[1] == 0xC000  # truncated
    assert statuses[2] == 0xC000  # no SOP Instance UID
    assert statuses[3] == 0xC000  # does not match its transfer syntax
    assert statuses[4] == 0xA900  # does not match the SOP class
    assert statuses[5] == 0xC000  # 0 bytes
    # Exactly the two good instances are stored; nothing else was lost or half-written.
    assert sorted(str(p.name) for p in scp_node.store.instance_paths(study_uid)) == sorted(
        [f"{good1.SOPInstanceUID}.dcm", f"{good2.SOPInstanceUID}.dcm"]
    )
    assert len(list(scp_node.cfg.spool_dir.rglob("*"))) == 3  # one study folder, two files
    assert scp_node.metric("mrinode_store_failures_total", {"status": "0xC000"}) == 4
    assert scp_node.metric("mrinode_store_failures_total", {"status": "0xA900"}) == 1


def test_write_failure_answers_out_of_resources(scp_node: ScpNode, tmp_path: Path) -> None:
    study_uid, paths = write_mr_series(tmp_path / "in", 1)
    # The study folder cannot be created: a file stands where it should go.
    from dicom_node.spool import safe_name

    (scp_node.cfg.spool_dir / safe_name(study_uid)).write_text("in the way")
    assert _send(scp_node.port, paths, [(MRImageStorage, [ExplicitVRLittleEndian])]) == [0xA700]
    r = _dcmtk("storescu", "-aec", "MRINODE", "127.0.0.1", str(scp_node.port), str(paths[0]))
    assert r.returncode != 0
    assert scp_node.store.count_instances() == 0
    assert scp_node.metric("mrinode_store_failures_total", {"status": "0xA700"}) == 2


def test_common_transfer_syntaxes_are_stored_as_sent(scp_node: ScpNode, tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    names = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm",
             "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
             "SC_rgb_jpeg_gdcm.dcm", "JPEG-LL.dcm"]
    for name in names:
        src = get_testdata_file(name)
        assert src is not None, name
        path = Path(src)
        meta, body = _split(path)
        # Several of these files share one SOP Instance UID: each replaces the one before.
        statuses = _send(scp_node.port, [path], [(str(meta.MediaStorageSOPClassUID), [str(meta.TransferSyntaxUID)])])
        assert statuses == [0], name
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        stored = scp_node.spool.path_for(str(ds.StudyInstanceUID), str(ds.SOPInstanceUID))
        smeta, sbody = _split(stored)
        assert smeta.TransferSyntaxUID == meta.TransferSyntaxUID, name
        assert sbody == body, name
        assert scp_node.store.has_instance(str(ds.SOPInstanceUID))
    assert scp_node.store.count_instances() == len({
        pydicom.dcmread(get_testdata_file(n) or "", stop_before_pixels=True).SOPInstanceUID for n in names
    })


def test_peer_abort_and_release_leave_no_association_behind(scp_node: ScpNode, tmp_path: Path) -> None:
    import time

    _, paths = write_mr_series(tmp_path / "in", 3)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    for ending in ("abort", "release", "abort"):
        assoc = ae.associate("127.0.0.1", scp_node.port, ae_title="MRINODE")
        assert assoc.is_established
        assert int(assoc.send_c_store(paths[0]).Status) == 0
        assoc.abort() if ending == "abort" else assoc.release()
    server = scp_node.scp._server
    assert server is not None
    deadline = time.monotonic() + 10
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.active_associations == []
    assert _dcmtk("echoscu", "-aec", "MRINODE", "127.0.0.1", str(scp_node.port)).returncode == 0
