"""Start-up recovery indexes spool files whose index rows a power loss took away."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dicom_node.recovery import reindex_unindexed
from tests.dicom_node.conftest import ScpNode
from tests.support.mrfiles import write_mr_series


def test_lost_index_rows_are_rebuilt_from_the_spool(scp_node: ScpNode, tmp_path: Path) -> None:
    study_uid, _ = write_mr_series(tmp_path / "in", 3)
    r = subprocess.run(["storescu", "-aec", "MRINODE", "+sd", "127.0.0.1", str(scp_node.port), str(tmp_path / "in")],
                       capture_output=True, env=dict(os.environ, TCP_NODELAY="1"), check=False)
    assert r.returncode == 0
    paths = scp_node.store.instance_paths(study_uid)
    # As if the last two commits had not reached the disk:
    with scp_node.store.transaction() as c:
        c.execute("DELETE FROM instances WHERE path IN (?, ?)", (str(paths[1]), str(paths[2])))
    garbage = paths[0].parent / "1.2.3.999.dcm"
    garbage.write_bytes(b"not dicom")
    assert scp_node.store.count_instances() == 1
    assert reindex_unindexed(scp_node.store, scp_node.spool) == 2
    assert sorted(scp_node.store.instance_paths(study_uid)) == sorted(paths)
    rows = scp_node.store.conn().execute("SELECT calling_ae, modality FROM instances").fetchall()
    assert {(r["calling_ae"], r["modality"]) for r in rows} == {("STORESCU", "MR")}
    assert not garbage.exists() and garbage.with_suffix(".unreadable").exists()
    assert reindex_unindexed(scp_node.store, scp_node.spool) == 0
