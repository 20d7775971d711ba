"""``python -m dicom_node.demo run|stop`` (see :mod:`dicom_node.demo`)."""

from __future__ import annotations

import sys

from dicom_node.demo import main

if __name__ == "__main__":
    sys.exit(main())
