"""DICOM TLS on the SCP, with client-certificate verification (certificates made by openssl)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE

from dicom_node.audit import AuditLog
from dicom_node.metrics import NodeMetrics
from dicom_node.scp import StoreSCP
from dicom_node.spool import Spool
from dicom_node.store import Store
from tests.dicom_node.conftest import make_config
from tests.support.mrfiles import write_mr_series

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _pki(d: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=mrinode-test-ca", cwd=d)
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


def _client_context(d: Path, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(d / "ca.crt"))
    if with_cert:
        ctx.load_cert_chain(str(d / "client.crt"), str(d / "client.key"))
    return ctx


def test_tls_with_client_verification(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    _pki(pki)
    cfg = make_config(tmp_path, tls={"enabled": True, "cert": str(pki / "server.crt"), "key": str(pki / "server.key"),
                                     "ca": str(pki / "ca.crt"), "verify_client": True})
    store = Store(cfg.db_path)
    scp = StoreSCP(cfg, store, Spool(cfg.spool_dir), NodeMetrics(), AuditLog(cfg.audit_log_path))
    scp.start()
    try:
        _, paths = write_mr_series(tmp_path / "in", 2)
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="MRINODE",
                             tls_args=(_client_context(pki, True), "127.0.0.1"))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assert [int(assoc.send_c_store(p).Status) for p in paths] == [0, 0]
        assoc.release()
        assert store.count_instances() == 2
        # No client certificate: the TLS handshake fails and nothing is stored.
        refused = ae.associate("127.0.0.1", scp.port, ae_title="MRINODE",
                               tls_args=(_client_context(pki, False), "127.0.0.1"))
        assert not refused.is_established
        # Plain TCP to the TLS port does not get an association either.
        ae.acse_timeout = ae.network_timeout = 3
        plain = ae.associate("127.0.0.1", scp.port, ae_title="MRINODE")
        assert not plain.is_established
        assert store.count_instances() == 2
    finally:
        scp.stop(grace_s=2)
        store.close()
