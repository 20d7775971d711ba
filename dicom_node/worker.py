"""Workers: run jobs' pipelines in warm, supervised child processes, so a crash cannot take the node down.

The supervisor is :class:`dicom_node.workers.pool.WorkerPool` (threads in the ``serve``
process, one warm child per device); the child is :mod:`dicom_node.workers.child`. This
module keeps the old names: ``python -m dicom_node.worker`` runs one job spec read from
stdin and writes ``result.json`` into its ``out_dir`` (non-zero exit on failure).
"""

from __future__ import annotations

import sys

from dicom_node.jobrun import run_spec
from dicom_node.workers.child import main
from dicom_node.workers.pool import WorkerPool

__all__ = ["WorkerPool", "main", "run_spec"]


if __name__ == "__main__":  # pragma: no cover - the one-shot child process
    sys.exit(main())
