"""Real healthy brains (MNI152 2009a and Colin27 T1, as shipped by nilearn and mricron-data) get
almost no predicted tumour from the shipped demo bundle (acceptance: under 1 mL).

The templates are resampled to 2 mm to keep the test quick, then written as a DICOM series
and run through ``mrinode infer`` like any study.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dicom_node.cli import main
from tests.models.nifti_dicom import write_volume_as_dicom

MNI = Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")


def _template(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from training.healthy import template_t1

    if not path.is_file():
        import nilearn

        path = Path(nilearn.__file__).parent / "datasets/data" / path.name
    if not path.is_file():
        pytest.skip(f"{path} is not installed")
    return template_t1(path, 2.0)


@pytest.mark.parametrize("template", [MNI, COLIN], ids=["mni152", "colin27"])
def test_healthy_brain_gets_under_one_ml_of_tumour(template: Path, tmp_path, capsys) -> None:
    data, affine = _template(template)
    write_volume_as_dicom(data, affine, tmp_path / "in", description="T1 MPRAGE")
    assert main(["infer", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--headers-only", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert list(summary["sequences_used"]) == ["T1"]
    assert summary["total_ml"] < 1.0, summary["volumes_ml"]
