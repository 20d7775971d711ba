"""SEG and SR stored into a real Orthanc (C-STORE with dcmtk storescu) are found through
DICOMweb QIDO-RS and read back through WADO-RS intact."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from pydicom.uid import generate_uid

from dicom_node.io.codes import BRATS_SEGMENTS, AlgorithmSpec
from dicom_node.io.reader import read_series
from dicom_node.io.seg import read_seg_labels, write_seg
from dicom_node.io.sr import segment_volumes_ml, write_measurement_report
from dicom_node.sequences import SequenceLabel
from tests.io.series_factory import make_series
from tests.support.orthanc import DICOMWEB_PLUGIN, OrthancServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path("/usr/sbin/Orthanc").exists()
        or shutil.which("storescu") is None
        or not DICOMWEB_PLUGIN.exists(),
        reason="needs Orthanc with the DICOMweb plugin and dcmtk",
    ),
]

ALGORITHM = AlgorithmSpec(name="tiny-synthetic-segmenter", version="0.1.0")


class _Ident:
    def __init__(self, series_uid: str) -> None:
        self.series_uid = series_uid
        self.series_number = 3
        self.description = "t1_mprage_gd"
        self.label = SequenceLabel.T1C
        self.confidence = 0.95


def _storescu(port: int, files: list[Path]) -> None:
    """C-STORE with dcmtk; ``-R`` proposes exactly the SOP classes of the files (SEG is not in its default list)."""
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.run(
        ["storescu", "-R", "-aet", "MRINODE", "-aec", "ORTHANC", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_seg_and_sr_through_dicomweb(tmp_path: Path) -> None:
    study_uid = generate_uid()
    paths, _ = make_series(
        tmp_path / "src", orientation="oblique", study_uid=study_uid, instance_order="random"
    )
    (vol,) = read_series(paths)
    labels = np.zeros(vol.shape, np.uint8)
    labels[4:12, 3:10, 2:8] = 2
    labels[6:9, 5:8, 4:6] = 1
    labels[15:18, 12:15, 9] = 3
    seg = write_seg(labels, vol, BRATS_SEGMENTS, ALGORITHM)
    sr = write_measurement_report(
        seg=seg,
        reference=vol,
        source_volumes=[vol],
        segment_volumes_ml=segment_volumes_ml(labels, vol, BRATS_SEGMENTS),
        identifications=[_Ident(vol.series_uid)],
        algorithm=ALGORITHM,
    )
    seg_path, sr_path = tmp_path / "seg.dcm", tmp_path / "sr.dcm"
    seg.save_as(seg_path)
    sr.save_as(sr_path)

    with OrthancServer(tmp_path / "orthanc", plugins=[DICOMWEB_PLUGIN]) as orthanc:
        _storescu(orthanc.dicom_port, [*paths, seg_path, sr_path])
        session = create_session_from_user_pass(orthanc.user, orthanc.password)
        client = DICOMwebClient(url=f"{orthanc.url}/dicom-web", session=session)

        found = client.search_for_series(study_instance_uid=study_uid, search_filters={"Modality": "SEG"})
        assert [s["0020000E"]["Value"][0] for s in found] == [seg.SeriesInstanceUID]
        found_sr = client.search_for_series(study_instance_uid=study_uid, search_filters={"Modality": "SR"})
        assert [s["0020000E"]["Value"][0] for s in found_sr] == [sr.SeriesInstanceUID]
        instances = client.search_for_instances(
            study_instance_uid=study_uid, series_instance_uid=seg.SeriesInstanceUID
        )
        assert [i["00080018"]["Value"][0] for i in instances] == [seg.SOPInstanceUID]

        seg_back = client.retrieve_instance(study_uid, seg.SeriesInstanceUID, seg.SOPInstanceUID)
        assert np.array_equal(read_seg_labels(seg_back, vol, BRATS_SEGMENTS), labels)
        sr_back = client.retrieve_instance(study_uid, sr.SeriesInstanceUID, sr.SOPInstanceUID)
        assert sr_back.SOPClassUID == sr.SOPClassUID
        assert sr_back.ContentTemplateSequence[0].TemplateIdentifier == "1500"
        assert sr_back.ContentSequence == sr.ContentSequence
