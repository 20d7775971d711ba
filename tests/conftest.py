"""Session set-up for every test: dcmtk's tools first on ``PATH``.

With the virtual environment activated, pynetdicom's ``storescu``/``storescp``/``echoscu`` scripts in its
``bin`` shadow dcmtk's, and the tests (which call the tools by name) would run the wrong ones.
A temporary folder of links to dcmtk's tools goes in front of ``PATH``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from dicom_node.dcmtk import find_tool

_TOOLS = ("storescu", "storescp", "echoscu", "echoscp", "findscu", "getscu", "movescu")


def _dcmtk_first_on_path() -> None:
    links = Path(tempfile.mkdtemp(prefix="mrinode-dcmtk-"))
    atexit.register(shutil.rmtree, links, ignore_errors=True)
    for name in _TOOLS:
        real = find_tool(name)
        if real is not None:
            (links / name).symlink_to(real)
    os.environ["PATH"] = f"{links}{os.pathsep}{os.environ.get('PATH', '')}"


_dcmtk_first_on_path()
