"""DICOM Segmentation (SEG) writer and reader on the grid of a source series.

The SEG references every source image (frame) of the series the label volume lives on,
shares its FrameOfReferenceUID, and describes each label with SNOMED CT codes and a
display colour. BINARY with empty frames omitted is the default; LABELMAP is an option.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid

from dicom_node.io.codes import AlgorithmSpec, SegmentSpec
from dicom_node.io.volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    import highdicom as hd

__all__ = ["labels_to_segment_numbers", "read_seg_labels", "segment_descriptions", "write_seg"]


def _algorithm_identification(algorithm: AlgorithmSpec) -> hd.AlgorithmIdentificationSequence:
    import highdicom as hd

    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=algorithm.family,
        version=algorithm.version,
        source=algorithm.source,
        parameters=dict(algorithm.parameters) or None,
    )


def segment_descriptions(
    segments: Sequence[SegmentSpec], algorithm: AlgorithmSpec, uid_seed: str | None = None
) -> list[hd.seg.SegmentDescription]:
    """highdicom segment descriptions, numbered 1..N in the order given.

    Parameters
    ----------
    segments : sequence of SegmentSpec
        The segments; segment number ``n`` describes ``segments[n - 1]``.
    algorithm : AlgorithmSpec
        The algorithm that made them.
    uid_seed : str, optional
        When given (the SEG's SOP Instance UID), each TrackingUID derives from it and the
        segment number, so the same result written twice is the same; random otherwise.

    Returns
    -------
    list of highdicom.seg.SegmentDescription
    """
    import highdicom as hd

    ident = _algorithm_identification(algorithm)
    out = []
    for number, spec in enumerate(segments, start=1):
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=spec.label,
                segmented_property_category=spec.category,
                segmented_property_type=spec.type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=ident,
                tracking_uid=generate_uid(entropy_srcs=[uid_seed, "segment", str(number)]) if uid_seed else generate_uid(),
                tracking_id=spec.tracking_id or spec.label,
                anatomic_regions=[spec.anatomic_region] if spec.anatomic_region is not None else None,
                display_color=hd.color.CIELabColor.from_rgb(*spec.rgb),
            )
        )
    return out


def labels_to_segment_numbers(labels: np.ndarray, segments: Sequence[SegmentSpec]) -> np.ndarray:
    """Map label values to segment numbers 1..N (0 stays background).

    Parameters
    ----------
    labels : numpy.ndarray
        Integer label volume.
    segments : sequence of SegmentSpec
        Segment ``n`` (1-based) has label value ``segments[n - 1].label_value``.

    Returns
    -------
    numpy.ndarray
        uint8 (or uint16 beyond 255 segments) array of segment numbers.

    Raises
    ------
    ValueError
        Labels that no segment describes, or two segments with one label value.
    """
    values = [int(s.label_value) for s in segments]
    if len(set(values)) != len(values):
        raise ValueError(f"Two segments share a label value: {sorted(values)}.")
    if labels.dtype == np.bool_:
        labels = labels.view(np.uint8)
    elif not np.issubdtype(labels.dtype, np.integer):
        labels = labels.astype(np.int64)
    low = int(labels.min()) if labels.size else 0
    if low < 0:
        raise ValueError(f"The label volume holds negative values (minimum {low}); labels must be >= 0.")
    top = int(labels.max()) if labels.size else 0
    out_dtype = np.uint8 if len(values) < 256 else np.uint16
    if values == list(range(1, len(values) + 1)) and top <= len(values):
        return labels.astype(out_dtype)  # label values are the segment numbers already
    if top < 1 << 16:
        present = {int(v) for v in np.flatnonzero(np.bincount(labels.ravel(order="K"), minlength=1))}
    else:
        present = {int(v) for v in np.unique(labels)}
    unknown = sorted(present - set(values) - {0})
    if unknown:
        raise ValueError(
            f"The label volume holds values {unknown} that no segment describes (described: {sorted(values)})."
        )
    lut = np.zeros(max([*values, top]) + 1, dtype=out_dtype)
    for number, value in enumerate(values, start=1):
        lut[value] = number
    small = labels.dtype.itemsize <= 2 and np.issubdtype(labels.dtype, np.unsignedinteger)
    return lut[labels if small else labels.astype(np.intp)]


def _shared_geometry(source: Dataset) -> Dataset:
    """A view of a multi-frame source whose shared functional groups hold the geometry.

    highdicom reads pixel measures and plane orientation from the *shared* functional
    groups only; some vendors (Philips) put them per frame. The reader has checked that
    they agree across the frames, so the first frame's items are copied into a new
    shared group of a shallow copy (the source dataset itself is not changed).
    """
    shared = source.get("SharedFunctionalGroupsSequence", None)
    shared_item = shared[0] if shared else Dataset()
    per_frame = source.get("PerFrameFunctionalGroupsSequence", None)
    missing = [kw for kw in ("PixelMeasuresSequence", "PlaneOrientationSequence") if kw not in shared_item]
    if not missing or not per_frame:
        return source
    new_shared = Dataset()
    new_shared.update(shared_item)
    for keyword in missing:
        if keyword in per_frame[0]:
            setattr(new_shared, keyword, per_frame[0][keyword].value)
    view = Dataset()
    view.update(source)
    view.SharedFunctionalGroupsSequence = [new_shared]
    return view


def _frames_for_source(numbers: np.ndarray, reference: Volume) -> tuple[list[Dataset], np.ndarray]:
    """Order segment-number planes as highdicom expects: one per source image (frame)."""
    refs = reference.slice_refs
    planes = np.ascontiguousarray(np.transpose(numbers, (2, 1, 0)))  # (k, rows, cols)
    if all(frame is None for _, _, frame in refs):
        by_uid = {str(h.SOPInstanceUID): h for h in reference.headers}
        if len(by_uid) != len(refs) or len({r[1] for r in refs}) != len(refs):
            raise ValueError(
                f"{reference.name}: a SEG needs one source instance per slice; this volume's slices share instances "
                "(mosaic?). Resample the labels onto a single-frame or Enhanced series first."
            )
        return [by_uid[uid] for _, uid, _ in refs], planes
    if len(reference.headers) != 1 or any(frame is None for _, _, frame in refs):
        raise ValueError(
            f"{reference.name}: slices mix single-frame and multi-frame sources; cannot write a SEG."
        )
    source = _shared_geometry(reference.headers[0])
    n_frames = int(source.get("NumberOfFrames", 1) or 1)
    full = np.zeros((n_frames, planes.shape[1], planes.shape[2]), dtype=planes.dtype)
    for k, (_, _, frame) in enumerate(refs):
        full[int(frame) - 1] = planes[k]  # type: ignore[arg-type]
    return [source], full


def write_seg(
    labels: np.ndarray,
    reference: Volume,
    segments: Sequence[SegmentSpec],
    algorithm: AlgorithmSpec,
    *,
    series_number: int = 900,
    labelmap: bool = False,
    omit_empty_frames: bool = True,
    instance_number: int = 1,
    series_description: str = "mrinode segmentation",
    content_label: str = "SEGMENTATION",
    manufacturer: str = "mrinode",
    manufacturer_model_name: str = "mrinode",
    software_versions: str = "0.1.0",
    device_serial_number: str = "0",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    workers: int = 0,
) -> Dataset:
    """Write a label volume as a DICOM Segmentation on the grid of ``reference``.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer array of the same shape as ``reference.data`` (i, j, k); 0 is background.
    reference : Volume
        The source series volume (from :func:`dicom_node.io.reader.read_series`).
    segments : sequence of SegmentSpec
        One per label value; segment numbers follow this order (1..N).
    algorithm : AlgorithmSpec
        Algorithm name, version and family.
    series_number : int
        SeriesNumber of the SEG series.
    labelmap : bool
        Write a LABELMAP SEG (one frame per slice, pixel = segment number) instead of BINARY.
    omit_empty_frames : bool
        Leave out frames without any segmented pixel (BINARY).
    workers : int
        highdicom frame-encoding workers (0: in-process).

    Other Parameters
    ----------------
    instance_number, series_description, content_label, manufacturer,
    manufacturer_model_name, software_versions, device_serial_number,
    series_instance_uid, sop_instance_uid
        Header values of the SEG (random when omitted). With ``sop_instance_uid`` the
        segments' TrackingUIDs derive from it too.

    Returns
    -------
    pydicom.Dataset
        A highdicom ``Segmentation`` (a pydicom Dataset), valid on construction.

    Raises
    ------
    ValueError
        Shape mismatch, labels without a segment, no FrameOfReferenceUID, or a
        reference whose slices are not one instance (frame) each.
    """
    import highdicom as hd

    labels = np.asarray(labels)
    if labels.shape != reference.data.shape:
        raise ValueError(
            f"Label volume shape {labels.shape} differs from {reference.name}'s grid {reference.data.shape}."
        )
    is_int = np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_)
    if not is_int and not np.array_equal(labels, np.round(labels)):
        raise ValueError("The label volume must hold integers.")
    if not segments:
        raise ValueError("write_seg needs at least one SegmentSpec.")
    if not reference.frame_of_reference_uid:
        raise ValueError(f"{reference.name} has no FrameOfReferenceUID; a SEG cannot be aligned to it.")
    numbers = labels_to_segment_numbers(labels, segments)
    sources, pixel_array = _frames_for_source(numbers, reference)
    seg_type = hd.seg.SegmentationTypeValues.LABELMAP if labelmap else hd.seg.SegmentationTypeValues.BINARY
    omit = omit_empty_frames and not labelmap and bool(pixel_array.any())
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=seg_type,
        segment_descriptions=segment_descriptions(segments, algorithm, uid_seed=sop_instance_uid),
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=instance_number,
        manufacturer=manufacturer,
        manufacturer_model_name=manufacturer_model_name,
        software_versions=software_versions,
        device_serial_number=device_serial_number,
        content_label=content_label,
        content_description=f"{algorithm.name} {algorithm.version}"[:64],
        omit_empty_frames=omit,
        workers=workers,
    )
    seg.SeriesDescription = series_description[:64]
    return seg


def read_seg_labels(
    seg_dataset: Dataset, reference: Volume, segments: Sequence[SegmentSpec] | None = None
) -> np.ndarray:
    """Read a SEG back onto the grid of ``reference`` as a label volume.

    Uses highdicom's source-image lookup, so the result lands on the voxels of the
    source frames the SEG references (omitted frames read as background).

    Parameters
    ----------
    seg_dataset : pydicom.Dataset
        A SEG (a highdicom Segmentation or any dataset / file read with pydicom).
    reference : Volume
        The source series volume.
    segments : sequence of SegmentSpec, optional
        When given, segment number ``n`` is mapped to ``segments[n - 1].label_value``;
        otherwise the result holds segment numbers.

    Returns
    -------
    numpy.ndarray
        int32 array of shape ``reference.data.shape``.

    Raises
    ------
    ValueError
        The SEG does not reference the reference series' images.
    """
    import highdicom as hd

    seg = (
        seg_dataset
        if isinstance(seg_dataset, hd.seg.Segmentation)
        else hd.seg.Segmentation.from_dataset(seg_dataset)
    )
    refs = reference.slice_refs
    if all(frame is None for _, _, frame in refs):
        planes = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[uid for _, uid, _ in refs],
            combine_segments=True,
            dtype=np.int32,
            assert_missing_frames_are_empty=True,
        )
    else:
        planes = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=refs[0][1],
            source_frame_numbers=[int(f) for _, _, f in refs],  # type: ignore[arg-type]
            combine_segments=True,
            dtype=np.int32,
            assert_missing_frames_are_empty=True,
        )
    out = np.ascontiguousarray(np.transpose(np.asarray(planes), (2, 1, 0))).astype(np.int32)
    if segments is not None:
        lut = np.zeros(len(segments) + 1, dtype=np.int32)
        for number, spec in enumerate(segments, start=1):
            lut[number] = int(spec.label_value)
        out = lut[out]
    return out
