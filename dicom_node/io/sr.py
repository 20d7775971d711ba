"""TID 1500 Measurement Report (Comprehensive 3D SR) for a segmentation result.

One measurement group (TID 1411) per SEG segment with its volume in mL, referencing the
SEG segment and the source series; one group (TID 1501) per input series stating the
MR sequence identified for it (and the confidence), referencing an image of that series;
and, when analysis was not possible, a group that says so and names the missing
sequences. The algorithm is the device observer and is named in every group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydicom import Dataset
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
from dicom_node.io.volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    import highdicom as hd

__all__ = ["SeriesIdentificationLike", "segment_volumes_ml", "write_measurement_report"]

#: SNOMED CT "Magnetic resonance imaging of head" (procedure reported).
PROCEDURE_MR_HEAD = ("241601008", "SCT", "MR of head")


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


def _identification_group(
    ident: SeriesIdentificationLike,
    volumes: Mapping[str, Volume],
    algorithm_id: hd.sr.AlgorithmIdentification,
    uid_seed: str | None = None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    import highdicom as hd

    source_images = None
    vol = volumes.get(ident.series_uid)
    if vol is not None and vol.slice_refs:
        sop_class, sop_uid, frame = _first_image(vol)
        source_images = [hd.sr.SourceImageForMeasurementGroup(sop_class, sop_uid, [frame] if frame else None)]
    number = "?" if ident.series_number is None else str(ident.series_number)
    name = f"Series {number} sequence" + (f" ({ident.description})" if ident.description else "")
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_tracking_uid(uid_seed, "series", str(ident.series_uid)), identifier=name[:64]
        ),
        algorithm_id=algorithm_id,
        measurements=[
            hd.sr.Measurement(
                name=SR_IDENTIFICATION_CONFIDENCE,
                value=float(ident.confidence),
                unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
            )
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=SR_IDENTIFIED_SEQUENCE, value=sequence_code(str(ident.label)))
        ],
        source_images=source_images,
    )


def _segment_groups(
    seg: Dataset,
    reference: Volume,
    segment_volumes_ml: Mapping[int, float],
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    described = {int(item.SegmentNumber): item for item in seg.SegmentSequence}
    unknown = sorted(set(segment_volumes_ml) - set(described))
    if unknown:
        raise ValueError(
            f"segment_volumes_ml names segment numbers {unknown} that the SEG does not describe."
        )
    groups = []
    for number in sorted(segment_volumes_ml):
        item = described[number]
        category = hd.sr.CodedConcept.from_dataset(item.SegmentedPropertyCategoryCodeSequence[0])
        prop = hd.sr.CodedConcept.from_dataset(item.SegmentedPropertyTypeCodeSequence[0])
        tracking_uid = str(item.get("TrackingUID", "") or "") or generate_uid()
        regions = item.get("AnatomicRegionSequence", None)
        sites = [hd.sr.FindingSite(hd.sr.CodedConcept.from_dataset(r)) for r in regions] if regions else None
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                # the segment's own words ("Enhancing tumour"), beside the finding's code (Neoplasm);
                # the TrackingUID is the SEG segment's, which links the two
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=tracking_uid, identifier=str(item.get("SegmentLabel", "") or item.get("TrackingID", ""))[:64]
                ),
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
                        value=round(float(segment_volumes_ml[number]), 4),
                        unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter"),
                        algorithm_id=algorithm_id,
                    )
                ],
            )
        )
    return groups


def _status_group(
    performed: bool,
    missing_sequences: Sequence[str],
    notes: Sequence[str],
    volumes: Sequence[Volume],
    algorithm_id: hd.sr.AlgorithmIdentification,
    uid_seed: str | None = None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    status = SR_COMPLETED if performed else SR_NOT_PERFORMED
    evaluations = [hd.sr.QualitativeEvaluation(name=SR_ANALYSIS_STATUS, value=status)]
    evaluations += [
        hd.sr.QualitativeEvaluation(name=SR_MISSING_SEQUENCE, value=sequence_code(str(s)))
        for s in missing_sequences
    ]
    sources = []
    for vol in volumes:
        if vol.slice_refs:
            sop_class, sop_uid, frame = _first_image(vol)
            sources.append(
                hd.sr.SourceImageForMeasurementGroup(sop_class, sop_uid, [frame] if frame else None)
            )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_tracking_uid(uid_seed, "status"), identifier="Analysis status"),
        algorithm_id=algorithm_id,
        qualitative_evaluations=evaluations,
        source_images=sources or None,
    )
    for note in notes:
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.DCM.Comment,
                value=str(note)[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


def write_measurement_report(
    *,
    seg: Dataset | None,
    reference: Volume | None,
    source_volumes: Sequence[Volume],
    segment_volumes_ml: Mapping[int, float],
    identifications: Sequence[SeriesIdentificationLike],
    algorithm: AlgorithmSpec,
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
        sequence-identification groups).
    segment_volumes_ml : mapping of int to float
        Volume in mL per SEG segment number (see :func:`segment_volumes_ml`).
    identifications : sequence of SeriesIdentificationLike
        One per series: ``series_uid``, ``series_number``, ``description``, ``label``
        (a ``SequenceLabel``), ``confidence``.
    algorithm : AlgorithmSpec
        The algorithm name and version (device observer, algorithm identification).
    missing_sequences : sequence of str
        Sequence labels that were required but absent.
    notes : sequence of str
        Free-text comments (no patient data) added to the status group.
    series_instance_uid, sop_instance_uid : str, optional
        The SR's UIDs (random when omitted). With ``sop_instance_uid`` the groups'
        TrackingUIDs derive from it too, so the same report written twice is the same.

    Returns
    -------
    pydicom.Dataset
        A highdicom ``Comprehensive3DSR``.

    Raises
    ------
    ValueError
        No evidence at all, ``seg`` without ``reference``, or volumes for segments the
        SEG does not describe.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if seg is not None and reference is None:
        raise ValueError("write_measurement_report: a SEG needs its reference volume.")
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
    if seg is not None and reference is not None:
        groups.extend(_segment_groups(seg, reference, segment_volumes_ml, algorithm_id))
    if seg is None or missing_sequences or notes:
        groups.append(_status_group(seg is not None, missing_sequences, notes, list(by_uid.values()), algorithm_id,
                                    sop_instance_uid))
    groups.extend(_identification_group(i, by_uid, algorithm_id, sop_instance_uid) for i in identifications)
    report = hd.sr.MeasurementReport(
        observation_context=_device_observer(algorithm),
        procedure_reported=hd.sr.CodedConcept(*PROCEDURE_MR_HEAD),
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
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
