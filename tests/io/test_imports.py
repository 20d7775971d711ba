"""The receive path may import the I/O basics without the heavy stack."""

from __future__ import annotations

import subprocess
import sys


def test_light_modules_do_not_import_heavy_packages() -> None:
    code = (
        "import sys\n"
        "import dicom_node.io.grouping, dicom_node.io.volume, dicom_node.io.reader, dicom_node.io.errors\n"
        "import dicom_node.io.codes, dicom_node.io.seg, dicom_node.io.sr, dicom_node.io.nifti, dicom_node.io.sc\n"
        "import dicom_node.cli.convert\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'highdicom', 'nibabel', 'scipy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""
