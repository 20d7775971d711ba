"""The libraries' INFO chatter is off unless ``mrinode --verbose``; UIDs stay hashed either way."""

from __future__ import annotations

import subprocess
import sys

import pytest

UID = "1.2.826.0.1.3680043.8.498.99887766554433221100"
PROBE = f"""
import logging, sys
from dicom_node.cli import build_parser
from dicom_node.logs import configure_logging
args = build_parser().parse_args(sys.argv[1:] + ["jobs"])
configure_logging(args.log_level, verbose=args.verbose)
logging.getLogger("highdicom.seg.sop").info("added segment to SOP Instance {UID}")
logging.getLogger("pydicom").info("reading file")
logging.getLogger("dicom_node.x").info("the node's own line")
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_library_info_lines_only_with_verbose(verbose: bool) -> None:
    args = ["--verbose"] if verbose else []
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60, check=True)
    assert "the node's own line" in r.stderr
    assert ("INFO highdicom.seg.sop" in r.stderr) is verbose
    assert ("INFO pydicom" in r.stderr) is verbose
    assert UID not in r.stderr
