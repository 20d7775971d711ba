"""Imaging I/O: DICOM series to volumes with exact geometry, NIfTI export, resampling,
and the result writers (DICOM-SEG, TID 1500 SR, optional burned-in Secondary Capture).

Import the modules you need; this package imports nothing itself so that the receive path
stays light (``reader``, ``grouping``, ``volume``, ``seg``, ``sr``, ``sc``, ``nifti`` import
highdicom, nibabel and scipy only inside their functions).

=============================  =======================================================
``volume.Volume``              voxels ``(i, j, k)`` + RAS affine + source references
``grouping.group_series``      files -> ``{SeriesInstanceUID: [paths]}``
``reader.read_series``         one series' files -> ``list[Volume]`` (4-D splits);
                               raises ``errors.SeriesReadError`` with a sentence
``resample.resample_to``       one volume onto another's grid (physical space)
``nifti.write_nifti_with_sidecar``  ``.nii.gz`` + JSON sidecar
``codes``                      ``SegmentSpec``, ``AlgorithmSpec``, ``BRATS_SEGMENTS``,
                               ``BRAIN``, ``sequence_code``
``seg.write_seg``              label volume -> DICOM-SEG; ``seg.read_seg_labels`` back
``sr.write_measurement_report``  TID 1500 Comprehensive 3D SR (with or without a SEG)
``sc.write_overlay_sc``        RGB Secondary Capture with the labels burned in
=============================  =======================================================
"""

from __future__ import annotations

__all__: list[str] = []
