"""The brain-tumour pipeline: the generic segmentation pipeline with the demo bundle by default.

Reference it from the node configuration as ``"dicom_node.pipelines.tumour:run"``. Everything
else (sequences, segment codes and colours, algorithm identification) comes from the
model's card; options as for :mod:`dicom_node.pipelines.segmentation` (``model`` defaults
to ``"brain-tumour-demo"``).
"""

from __future__ import annotations

from dicom_node.pipelines.segmentation import SegmentationPipeline

__all__ = ["DEFAULT_MODEL", "run"]

#: The bundle used when the options name none.
DEFAULT_MODEL = "brain-tumour-demo"

#: The pipeline function.
run = SegmentationPipeline(default_model=DEFAULT_MODEL, name="brain-tumour")
