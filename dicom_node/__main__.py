"""``python -m dicom_node`` runs the ``mrinode`` command line."""

import sys

from dicom_node.cli import main

sys.exit(main())
