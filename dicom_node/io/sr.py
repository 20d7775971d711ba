"""TID 1500 Measurement Report (Comprehensive 3D SR) for a segmentation result.

Imaging measurements, for each SEG segment that holds voxels:

* a volumetric group (TID 1411) with its volume in mL, referencing the SEG segment and the
  source series; its Tracking Identifier is the SEG's SegmentLabel, its TrackingUID the
  SEG segment's, its finding and category the SEG's coded SegmentedPropertyType and
  SegmentedPropertyCategory (so the SR and the SEG use the same words and codes);
* RANO-style bidimensional measurements (:mod:`dicom_node.io.rano`): per lesion, the
  longest in-plane diameter and the longest perpendicular to it, each a NUM inferred from
  a SCOORD POLYLINE on the referenced source image (TID 1501 with TID 300, as OHIF and most
  PACS viewers draw them); for enhancing tumour, RANO measurability. The largest lesion's
  group shares the segment's TrackingUID, so a viewer that merges groups by TrackingUID
  (OHIF) shows the volume beside the diameters, drawn on the right image. Its Tracking
  Identifier names the bidirectional tool of OHIF's SR adapters before the segment's name
  (``Cornerstone3DTools@^0.1.0:Bidirectional:Enhancing tumour``), its NUMs are "Long Axis"
  and "Short Axis" (CID 7470's meanings) and its Comment is the segment's name, so OHIF
  lists it in its Measurements panel under the SEG's SegmentLabel, with the SEG's finding
  code; these groups precede the volume group (OHIF takes the first Tracking Identifier of
  groups it merges).

A segment without voxels gets no measurement group (there is nothing to measure or draw);
the report's text says "none found" for it. A report without any measurement group (the
"not performed" report, or nothing found) is titled "Diagnostic imaging report" instead of
"Imaging Measurement Report": OHIF then shows it as text instead of failing to draw it.

The document-level Qualitative Evaluations container (TID 1500) holds what is not a
measurement of an image region: the analysis status and missing sequences, the notes, a
one-line text per segment (volume and diameters, readable by any SR viewer), and the MR
sequence identified for each input series (with its confidence, Series Instance UID and an
image of the series). Keeping these out of the measurement groups is what lets OHIF open
the report: it expects every measurement group to carry a spatial coordinate.
The algorithm is the device observer and is named in every group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from dicom_node.io.codes import (
    PRIVATE_SCHEME,
    SR_ANALYSIS_STATUS,
    SR_COMPLETED,
    SR_IDENTIFICATION_CONFIDENCE,
    SR_IDENTIFIED_SEQUENCE,
    SR_MISSING_SEQUENCE,
    SR_NOT_PERFORMED,
    AlgorithmSpec,
    SegmentSpec,
    sequence_code,
)
from dicom_node.io.rano import Bidimensional, bidimensional_measurements
from dicom_node.io.volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    import highdicom as hd

__all__ = [
    "SeriesIdentificationLike",
    "enhancing_segment_numbers",
    "segment_bidimensional",
    "segment_volumes_ml",
    "write_measurement_report",
]

#: SNOMED CT "Magnetic resonance imaging of head" (procedure reported).
PROCEDURE_MR_HEAD = ("241601008", "SCT", "MR of head")
#: TID 1500's document-level container of qualitative evaluations.
QUALITATIVE_EVALUATIONS = ("C0034375", "UMLS", "Qualitative Evaluations")
#: Private codes of the bidimensional measurement.
SR_RANO_MEASURABILITY = Code("RANO-MEAS", PRIVATE_SCHEME, "RANO measurability")
SR_RANO_MEASURABLE = Code("RANO-YES", PRIVATE_SCHEME, "Measurable (both diameters >= 10 mm)")
SR_RANO_NON_MEASURABLE = Code("RANO-NO", PRIVATE_SCHEME, "Non-measurable (a diameter < 10 mm)")
SR_SEGMENT_SUMMARY = Code("SEG-SUMMARY", PRIVATE_SCHEME, "Segment summary")
#: Title of a report without imaging measurements (nothing found, or not performed): LOINC
#: "Diagnostic imaging report" (CID 7000), allowed because TID 1500's title group CID 7021
#: is extensible. Viewers that draw "Imaging Measurement Report"s (OHIF) expect something
#: to draw in one and fail on an empty one; under this title OHIF shows the report's text.
REPORT_WITHOUT_MEASUREMENTS = ("18748-4", "LN", "Diagnostic imaging report")
#: SNOMED CT long and short axis, with the meanings of DICOM's CID 7470 (Linear Measurement):
#: OHIF's bidirectional tool finds the two NUMs by these exact meanings.
LONG_AXIS = ("103339001", "SCT", "Long Axis")
SHORT_AXIS = ("103340004", "SCT", "Short Axis")
#: Tracking Identifier prefix of a bidimensional group: the tool OHIF's SR adapters
#: (@cornerstonejs/adapters) recreate from it, so OHIF lists the group in its Measurements
#: panel as an editable bidirectional measurement; the segment's name follows the prefix.
BIDIRECTIONAL_TRACKING_PREFIX = "Cornerstone3DTools@^0.1.0:Bidirectional"


class SeriesIdentificationLike(Protocol):
    """What the SR needs to know about one identified series (read-only attributes).

    Any object with these attributes fits, e.g. the sequence identifier's result.
    """

    @property
    def series_uid(self) -> str: ...

    @property
    def series_number(self) -> int | None: ...

    @property
    def description(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def confidence(self) -> float: ...


def segment_volumes_ml(
    labels: np.ndarray, reference: Volume, segments: Sequence[SegmentSpec]
) -> dict[int, float]:
    """Volume of each segment in millilitres, keyed by SEG segment number (1..N).

    Parameters
    ----------
    labels : numpy.ndarray
        Integer label volume on ``reference``'s grid.
    reference : Volume
        Gives the voxel size.
    segments : sequence of SegmentSpec
        Segment ``n`` counts the voxels equal to ``segments[n - 1].label_value``.

    Returns
    -------
    dict of int to float
    """
    voxel_ml = abs(float(np.linalg.det(reference.affine[:3, :3]))) / 1000.0
    return {
        n: float(np.count_nonzero(labels == s.label_value)) * voxel_ml
        for n, s in enumerate(segments, start=1)
    }


def segment_bidimensional(
    labels: np.ndarray, reference: Volume, segments: Sequence[SegmentSpec], *, max_lesions: int = 5
) -> dict[int, list[Bidimensional]]:
    """RANO-style bidimensional measurements of each segment, keyed by SEG segment number.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer label volume on ``reference``'s grid.
    reference : Volume
        The source series (gives the in-plane pixel spacing).
    segments : sequence of SegmentSpec
        Segment ``n`` is the voxels equal to ``segments[n - 1].label_value``.
    max_lesions : int
        Lesions (connected components) reported per segment, largest first.

    Returns
    -------
    dict of int to list of Bidimensional
        Empty lists for segments without voxels.
    """
    spacing = (float(np.linalg.norm(reference.affine[:3, 0])), float(np.linalg.norm(reference.affine[:3, 1])))
    return {
        n: bidimensional_measurements(labels == s.label_value, spacing, max_lesions=max_lesions)
        for n, s in enumerate(segments, start=1)
    }


def enhancing_segment_numbers(seg: Dataset) -> list[int]:
    """The SEG segments that RANO's measurability applies to (enhancing tumour).

    A segment counts when its label or tracking id says so ("enhancing", ``ET``).
    """
    out = []
    for item in seg.SegmentSequence:
        label = str(item.get("SegmentLabel", "") or "").lower()
        tracking = str(item.get("TrackingID", "") or "").upper()
        if "enhancing" in label or tracking == "ET":
            out.append(int(item.SegmentNumber))
    return out


def _device_observer(algorithm: AlgorithmSpec) -> hd.sr.ObservationContext:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    uid = generate_uid(entropy_srcs=["mrinode-algorithm", algorithm.name, algorithm.version])
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=uid,
        name=algorithm.name[:64],
        manufacturer_name="mrinode",
        model_name=f"{algorithm.name} {algorithm.version}"[:64],
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _first_image(vol: Volume) -> tuple[str, str, int | None]:
    return vol.slice_refs[len(vol.slice_refs) // 2]


def _tracking_uid(seed: str | None, *parts: str) -> str:
    """A TrackingUID: derived from ``seed`` and ``parts`` when a seed is given, else random."""
    return str(generate_uid(entropy_srcs=[seed, *parts]) if seed else generate_uid())


def _image_item(vol: Volume, relationship: str = "INFERRED FROM") -> hd.sr.ImageContentItem:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sop_class, sop_uid, frame = _first_image(vol)
    return hd.sr.ImageContentItem(
        name=codes.DCM.SourceOfMeasurement, referenced_sop_class_uid=sop_class,
        referenced_sop_instance_uid=sop_uid, referenced_frame_numbers=[frame] if frame else None,
        relationship_type=relationship,
    )


def _identification_item(ident: SeriesIdentificationLike, volumes: Mapping[str, Volume]) -> hd.sr.CodeContentItem:
    """``Identified MR sequence = <code>`` with the series, confidence and an image of it."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    item = hd.sr.CodeContentItem(name=SR_IDENTIFIED_SEQUENCE, value=sequence_code(str(ident.label)),
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    number = "?" if ident.series_number is None else str(ident.series_number)
    name = f"Series {number}" + (f" ({ident.description})" if ident.description else "")
    children: list[Any] = [
        hd.sr.TextContentItem(name=codes.DCM.TrackingIdentifier, value=name[:64],
                              relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES),
        hd.sr.UIDRefContentItem(name=codes.DCM.SeriesInstanceUID, value=str(ident.series_uid),
                                relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES),
        hd.sr.NumContentItem(name=SR_IDENTIFICATION_CONFIDENCE, value=round(float(ident.confidence), 4),
                             unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
                             relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES),
    ]
    vol = volumes.get(ident.series_uid)
    if vol is not None and vol.slice_refs:
        children.append(_image_item(vol))
    item.ContentSequence = DicomSequence(children)
    return item


def _segment_items(seg: Dataset) -> dict[int, Dataset]:
    return {int(item.SegmentNumber): item for item in seg.SegmentSequence}


def _coded(item: Dataset, keyword: str) -> hd.sr.CodedConcept:
    import highdicom as hd

    return hd.sr.CodedConcept.from_dataset(getattr(item, keyword)[0])


def _segment_groups(
    seg: Dataset,
    reference: Volume,
    segment_volumes_ml: Mapping[int, float],
    bidimensional: Mapping[int, Sequence[Bidimensional]],
    algorithm_id: hd.sr.AlgorithmIdentification,
    uid_seed: str | None,
) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    described = _segment_items(seg)
    unknown = sorted((set(segment_volumes_ml) | set(bidimensional)) - set(described))
    if unknown:
        raise ValueError(
            f"segment_volumes_ml or bidimensional name segment numbers {unknown} that the SEG does not describe."
        )
    enhancing = set(enhancing_segment_numbers(seg))
    groups: list[Any] = []
    for number in sorted(segment_volumes_ml):
        volume = float(segment_volumes_ml[number])
        if volume <= 0.0:
            continue  # nothing to measure or draw; the text summary says "none found"
        item = described[number]
        category = _coded(item, "SegmentedPropertyCategoryCodeSequence")
        prop = _coded(item, "SegmentedPropertyTypeCodeSequence")
        label = str(item.get("SegmentLabel", "") or item.get("TrackingID", "") or f"Segment {number}")
        tracking_uid = str(item.get("TrackingUID", "") or "") or _tracking_uid(uid_seed, "segment", str(number))
        regions = item.get("AnatomicRegionSequence", None)
        sites = [hd.sr.FindingSite(hd.sr.CodedConcept.from_dataset(r)) for r in regions] if regions else None
        # the lesions' bidimensional groups come before the volume group: a viewer that
        # merges groups by TrackingUID (OHIF) takes the first group's Tracking Identifier,
        # and only the bidimensional one names a tool it can turn into a listed measurement
        for lesion in bidimensional.get(number, ()):
            groups.append(_bidimensional_group(lesion, reference, label, tracking_uid, prop, category, sites,
                                               number in enhancing, algorithm_id, uid_seed))
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                # the SEG's words: its SegmentLabel as the tracking identifier, its coded
                # property type and category as the finding; the TrackingUID is the segment's
                tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=label[:64]),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=str(seg.SOPClassUID),
                    sop_instance_uid=str(seg.SOPInstanceUID),
                    segment_number=number,
                    source_series=hd.sr.SourceSeriesForSegmentation(reference.series_uid),
                ),
                finding_type=prop,
                finding_category=category,
                finding_sites=sites,
                algorithm_id=algorithm_id,
                measurements=[
                    hd.sr.Measurement(
                        name=codes.SCT.Volume,
                        value=round(volume, 4),
                        unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter"),
                    )
                ],
            )
        )
    return groups


def _bidimensional_group(
    lesion: Bidimensional,
    reference: Volume,
    label: str,
    segment_tracking_uid: str,
    finding: hd.sr.CodedConcept,
    category: hd.sr.CodedConcept,
    sites: list[hd.sr.FindingSite] | None,
    rano: bool,
    algorithm_id: hd.sr.AlgorithmIdentification,
    uid_seed: str | None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sop_class, sop_uid, frame = reference.slice_refs[lesion.slice_index]
    frames = [frame] if frame else None

    def line(ends: tuple[tuple[float, float], tuple[float, float]]) -> hd.sr.CoordinatesForMeasurement:
        return hd.sr.CoordinatesForMeasurement(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array(ends, dtype=np.float64),
            source_image=hd.sr.SourceImageForRegion(sop_class, sop_uid, frames),
        )

    mm = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
    name = label if lesion.lesion == 1 else f"{label} lesion {lesion.lesion}"
    # the tool a viewer recreates from the group (OHIF lists it as a measurement), then the
    # segment's name; the name a viewer shows is the group's Comment (below)
    identifier = f"{BIDIRECTIONAL_TRACKING_PREFIX}:{name}"
    if lesion.lesion == 1:  # the segment's own tracking: a viewer shows the volume beside the diameters
        tracking = hd.sr.TrackingIdentifier(uid=segment_tracking_uid, identifier=identifier)
    else:
        tracking = hd.sr.TrackingIdentifier(
            uid=_tracking_uid(uid_seed or segment_tracking_uid, "lesion", segment_tracking_uid, str(lesion.lesion)),
            identifier=identifier,
        )
    evaluations = None
    if rano:
        evaluations = [hd.sr.QualitativeEvaluation(
            name=SR_RANO_MEASURABILITY, value=SR_RANO_MEASURABLE if lesion.measurable else SR_RANO_NON_MEASURABLE)]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        finding_type=finding,
        finding_category=category,
        finding_sites=sites,
        algorithm_id=algorithm_id,
        measurements=[
            hd.sr.Measurement(name=hd.sr.CodedConcept(*LONG_AXIS), value=float(lesion.long_mm), unit=mm,
                              referenced_coordinates=[line(lesion.long_axis)]),
            hd.sr.Measurement(name=hd.sr.CodedConcept(*SHORT_AXIS), value=float(lesion.short_mm), unit=mm,
                              referenced_coordinates=[line(lesion.short_axis)]),
        ],
        qualitative_evaluations=evaluations,
    )
    # the segment's name as a comment: the first line a viewer writes beside the drawing
    if rano:
        name += " (RANO measurable)" if lesion.measurable else " (RANO non-measurable)"
    group[0].ContentSequence.append(hd.sr.TextContentItem(
        name=codes.DCM.Comment, value=name[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return group


def _segment_summaries(
    seg: Dataset, segment_volumes_ml: Mapping[int, float], bidimensional: Mapping[int, Sequence[Bidimensional]]
) -> list[str]:
    """One sentence per SEG segment: its label, number, volume and diameters, or "none found"."""
    enhancing = set(enhancing_segment_numbers(seg))
    lines = []
    for number, item in sorted(_segment_items(seg).items()):
        label = str(item.get("SegmentLabel", "") or f"Segment {number}")
        volume = float(segment_volumes_ml.get(number, 0.0))
        if volume <= 0.0:
            lines.append(f"{label} (SEG segment {number}): none found.")
            continue
        text = f"{label} (SEG segment {number}): {volume:.2f} ml"
        for lesion in bidimensional.get(number, ()):
            text += (f"; lesion {lesion.lesion}: {lesion.long_mm:.1f} x {lesion.short_mm:.1f} mm"
                     f" on image {lesion.slice_index + 1}")
            if number in enhancing:
                text += " (RANO measurable)" if lesion.measurable else " (RANO non-measurable)"
        lines.append(text + ".")
    return lines


def _qualitative_evaluations(
    status: bool | None,
    missing_sequences: Sequence[str],
    notes: Sequence[str],
    summaries: Sequence[str],
    identifications: Sequence[SeriesIdentificationLike],
    volumes: Mapping[str, Volume],
) -> hd.sr.ContainerContentItem:
    """TID 1500's Qualitative Evaluations container (status, notes, summaries, identification)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    container = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept(*QUALITATIVE_EVALUATIONS),
                                           relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items: list[Any] = []
    if status is not None:
        items.append(hd.sr.CodeContentItem(name=SR_ANALYSIS_STATUS, value=SR_COMPLETED if status else SR_NOT_PERFORMED,
                                           relationship_type=contains))
    items += [hd.sr.CodeContentItem(name=SR_MISSING_SEQUENCE, value=sequence_code(str(s)), relationship_type=contains)
              for s in missing_sequences]
    items += [hd.sr.TextContentItem(name=SR_SEGMENT_SUMMARY, value=text[:1024], relationship_type=contains)
              for text in summaries]
    items += [hd.sr.TextContentItem(name=codes.DCM.Comment, value=str(note)[:1024], relationship_type=contains)
              for note in notes]
    items += [_identification_item(i, volumes) for i in identifications]
    container.ContentSequence = DicomSequence(items)
    return container


def write_measurement_report(
    *,
    seg: Dataset | None,
    reference: Volume | None,
    source_volumes: Sequence[Volume],
    segment_volumes_ml: Mapping[int, float],
    identifications: Sequence[SeriesIdentificationLike],
    algorithm: AlgorithmSpec,
    bidimensional: Mapping[int, Sequence[Bidimensional]] | None = None,
    missing_sequences: Sequence[str] = (),
    notes: Sequence[str] = (),
    series_number: int = 901,
    instance_number: int = 1,
    series_description: str = "mrinode measurement report",
    manufacturer: str = "mrinode",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """Write a TID 1500 Measurement Report as a Comprehensive 3D SR.

    Parameters
    ----------
    seg : pydicom.Dataset or None
        The SEG whose segments are measured; ``None`` when no segmentation was made (then
        ``missing_sequences`` and/or ``notes`` should say why; the SR states
        "Not performed").
    reference : Volume or None
        The series the SEG was made on (its source series); required with ``seg``.
    source_volumes : sequence of Volume
        Every input series (their images are the SR's evidence and are referenced by the
        sequence identification).
    segment_volumes_ml : mapping of int to float
        Volume in mL per SEG segment number (see :func:`segment_volumes_ml`). Segments
        with 0 mL get no measurement group.
    identifications : sequence of SeriesIdentificationLike
        One per series: ``series_uid``, ``series_number``, ``description``, ``label``
        (a ``SequenceLabel``), ``confidence``.
    algorithm : AlgorithmSpec
        The algorithm name and version (device observer, algorithm identification).
    bidimensional : mapping of int to list of Bidimensional, optional
        Per SEG segment number, the lesions' bidimensional measurements on ``reference``
        (see :func:`segment_bidimensional`). Viewers that need a spatial coordinate in
        every measurement group (OHIF) open the report only when each segment with
        voxels has one.
    missing_sequences : sequence of str
        Sequence labels that were required but absent.
    notes : sequence of str
        Free-text comments (no patient data).
    series_instance_uid, sop_instance_uid : str, optional
        The SR's UIDs (random when omitted). With ``sop_instance_uid`` the TrackingUIDs
        derive from it too, so the same report written twice is the same.

    Returns
    -------
    pydicom.Dataset
        A highdicom ``Comprehensive3DSR``.

    Raises
    ------
    ValueError
        No evidence at all, ``seg`` without ``reference``, volumes or measurements for
        segments the SEG does not describe, or a measurement on a slice the reference
        does not have.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if seg is not None and reference is None:
        raise ValueError("write_measurement_report: a SEG needs its reference volume.")
    bidimensional = dict(bidimensional or {})
    if reference is not None:
        for number, lesions in bidimensional.items():
            for lesion in lesions:
                if not 0 <= lesion.slice_index < len(reference.slice_refs):
                    raise ValueError(f"Segment {number} lesion {lesion.lesion} is measured on slice "
                                     f"{lesion.slice_index}, but the reference has {len(reference.slice_refs)}.")
    evidence: list[Dataset] = []
    seen: set[str] = set()
    for vol in ([reference] if reference is not None else []) + list(source_volumes):
        for header in vol.headers:
            uid = str(header.SOPInstanceUID)
            if uid not in seen:
                seen.add(uid)
                evidence.append(header)
    if seg is not None:
        evidence.insert(0, seg)
    if not evidence:
        raise ValueError("write_measurement_report needs a SEG or at least one source volume as evidence.")
    algorithm_id = hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version)
    by_uid = {v.series_uid: v for v in source_volumes}
    if reference is not None:
        by_uid.setdefault(reference.series_uid, reference)
    groups: list[Any] = []
    summaries: list[str] = []
    if seg is not None and reference is not None:
        groups.extend(_segment_groups(seg, reference, segment_volumes_ml, bidimensional, algorithm_id,
                                      sop_instance_uid))
        summaries = _segment_summaries(seg, segment_volumes_ml, bidimensional)
    # TID 1500 needs imaging measurements, derived measurements or qualitative evaluations;
    # highdicom insists on the first, so a report without any gets a placeholder group that
    # is taken out again below (a viewer must not find a measurement group without a region)
    placeholder = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_tracking_uid(sop_instance_uid, "none"), identifier="none"),
    )
    report = hd.sr.MeasurementReport(
        observation_context=_device_observer(algorithm),
        procedure_reported=hd.sr.CodedConcept(*PROCEDURE_MR_HEAD),
        imaging_measurements=groups or [placeholder],
        title=codes.DCM.ImagingMeasurementReport if groups else hd.sr.CodedConcept(*REPORT_WITHOUT_MEASUREMENTS),
    )
    if not groups:
        root = report[0].ContentSequence
        report[0].ContentSequence = DicomSequence(
            [item for item in root if item.ConceptNameCodeSequence[0].CodeValue != "126010"]  # Imaging Measurements
        )
    status = seg is not None if (seg is None or missing_sequences or notes) else None
    report[0].ContentSequence.append(
        _qualitative_evaluations(status, missing_sequences, notes, summaries, identifications, by_uid)
    )
    study_evidence = [d for d in evidence if d.StudyInstanceUID == evidence[-1].StudyInstanceUID] or evidence
    sr = hd.sr.Comprehensive3DSR(
        evidence=study_evidence,
        content=report,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=instance_number,
        manufacturer=manufacturer,
        is_complete=True,
        is_final=True,
    )
    sr.SeriesDescription = series_description[:64]
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "mrinode private codes"
    scheme.CodingSchemeResponsibleOrganization = "mrinode"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr
