"""Physics-based synthetic brain MRI: multi-sequence subjects with glioma-like tumours.

Typical use::

    from training.synth import generate_subject, write_subject

    s = generate_subject(7, field_strength=3.0, sequences=("T1", "T1C", "T2", "FLAIR"), voxel_mm=2.0)
    s.images["FLAIR"]         # float32 (ni, nj, nk) on the template grid, RAS (s.affine)
    s.labels                  # uint8 BraTS labels 0/1/2/3
    s.tissue                  # uint8 hard tissue labels (training.synth.tissue.Tissue)
    s.params                  # every parameter and the seed (JSON-ready)
    s.acquire("FLAIR")        # the series as the scanner writes it: stacks with data,
                              # labels and affine (plane, matrix, slice thickness)
    write_subject(s, "out", dicom=True)   # NIfTI + labels + params.json + a DICOM study

Modules: ``templates`` (tissue maps from shipped templates; anatomy source ``mni152`` or
``cat12``, drawn per subject unless ``anatomy=`` fixes it), ``cat12`` (the CAT12 Geodesic
Shooting template from deepmriprep), ``tissue`` (T1/T2/T2*/PD/ADC
by field strength, cited), ``physics`` (signal equations), ``anatomy`` (pose and
deformation), ``lesions`` (tumours), ``protocols`` (TR/TE/TI/flip and geometry),
``acquisition`` (noise, bias, motion, resampling onto acquired stacks), ``render``
(per-tissue signals and partial-volume mixing), ``vendors`` and ``dicom_writer``
(vendor-styled MR Image Storage files), ``subject`` (generate and write).
"""

from training.synth.subject import (
    DEFAULT_SEQUENCES,
    SYNTH_SEQUENCES,
    VENDORS,
    SyntheticSubject,
    generate_subject,
    write_subject,
)

__all__ = ["DEFAULT_SEQUENCES", "SYNTH_SEQUENCES", "VENDORS", "SyntheticSubject", "generate_subject", "write_subject"]
