"""The TEST pipeline: a DICOM-SEG of a threshold mask of the study's first MR series.

This is not a model and segments no anatomy. It exists so the node's spine (workers,
export, retries) can be exercised end to end with a real, valid DICOM object before and
besides the model pipelines. The segment is labelled "Threshold mask (test pipeline)".

Options (``[pipelines.options]``):

``threshold_fraction`` (float, default 0.5)
    The threshold is ``min + fraction * (max - min)`` of the series' stored values.
``sleep_s`` (float, optional)
    Sleep this long first — for tests of interrupted runs.
``fail`` (str, optional)
    ``"exception"`` raises and ``"crash"`` kills the worker process (``os._exit``) —
    for tests of the worker's failure handling.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from dicom_node.pipelines import PipelineRequest, PipelineResult

__all__ = ["run"]

_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _first_mr_series(paths: list[Path]) -> tuple[str, list[Any]] | None:
    import numpy as np
    from pydicom import dcmread

    by_series: dict[str, list[tuple[float, Path]]] = defaultdict(list)
    order: list[str] = []
    for p in paths:
        ds = dcmread(p, stop_before_pixels=True)
        if ds.get("SOPClassUID") != _MR_IMAGE_STORAGE or "ImagePositionPatient" not in ds:
            continue
        uid = str(ds.SeriesInstanceUID)
        if uid not in by_series:
            order.append(uid)
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        by_series[uid].append((float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))), p))
    if not order:
        return None
    first = min(order, key=lambda u: (int(dcmread(by_series[u][0][1], stop_before_pixels=True).get("SeriesNumber") or 0), u))
    slices = sorted(by_series[first], key=lambda t: t[0])
    return first, [dcmread(p) for _, p in slices]


def run(request: PipelineRequest) -> PipelineResult:
    """Write a SEG of a threshold mask of the first MR series (TEST pipeline).

    Parameters
    ----------
    request : PipelineRequest
        The study's instances, the output folder and the options.

    Returns
    -------
    PipelineResult
        One SEG file, or none (with the reason in the summary) when the study has no
        single-frame MR series.
    """
    import highdicom as hd
    import numpy as np
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    if request.options.get("sleep_s"):
        import time

        time.sleep(float(request.options["sleep_s"]))
    fail = request.options.get("fail")
    if fail == "exception":
        raise RuntimeError("test pipeline asked to fail (options.fail = 'exception')")
    if fail == "crash":
        os._exit(70)
    fraction = float(request.options.get("threshold_fraction", 0.5))
    found = _first_mr_series(request.instance_paths)
    if found is None:
        return PipelineResult(outputs=[], summary={"pipeline": "test", "note": "no single-frame MR series in the study"})
    series_uid, datasets = found
    volume = np.stack([ds.pixel_array for ds in datasets]).astype(np.float32)
    lo, hi = float(volume.min()), float(volume.max())
    mask = (volume > lo + fraction * (hi - lo)).astype(np.uint8)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Threshold mask (test pipeline)",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="mrinode test threshold", version="1", family=codes.cid7162.ArtificialIntelligence,
        ),
    )
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=9901,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="mrinode",
        manufacturer_model_name="test-threshold-seg",
        software_versions="0.1.0",
        device_serial_number="0",
        series_description="mrinode TEST threshold SEG",
    )
    out = Path(request.out_dir) / "test-threshold-seg.dcm"
    seg.save_as(out)
    return PipelineResult(
        outputs=[out],
        summary={"pipeline": "test", "series": series_uid, "slices": len(datasets), "threshold": lo + fraction * (hi - lo),
                 "mask_voxels": int(mask.sum())},
    )
