"""Imaging I/O: DICOM series to volumes with exact geometry, NIfTI export, resampling,
and the result writers (DICOM-SEG, TID 1500 SR).

Modules are imported individually (``from dicom_node.io.reader import read_series``);
this package imports nothing heavy so that the receive path stays light.
"""

from __future__ import annotations

__all__: list[str] = []
