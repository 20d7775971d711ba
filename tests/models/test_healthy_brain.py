"""Real healthy brains (MNI152 2009a and Colin27 T1, as shipped by nilearn and mricron-data) get
almost no predicted tumour from the shipped demo bundle (acceptance: under 1 mL).

The templates are resampled to 2 mm to keep the test quick, then written as a DICOM series
and run through ``mrinode infer`` like any study.
"""

from __future__ import annotations

import json

import pytest

from dicom_node.cli import main
from tests.models.nifti_dicom import write_volume_as_dicom


@pytest.mark.parametrize("name", ["mni152", "colin27"])
def test_healthy_brain_gets_under_one_ml_of_tumour(name: str, tmp_path, capsys) -> None:
    from training.healthy import template_paths, template_t1

    path = template_paths().get(name)
    assert path is not None, f"the {name} template is not installed (make setup installs nilearn and mricron-data)"
    data, affine = template_t1(path, 2.0)
    write_volume_as_dicom(data, affine, tmp_path / "in", description="T1 MPRAGE")
    assert main(["infer", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--headers-only", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert list(summary["sequences_used"]) == ["T1"]
    assert summary["total_ml"] < 1.0, summary["volumes_ml"]
