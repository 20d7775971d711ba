"""Physics-based synthetic brain MRI: multi-sequence subjects with glioma-like tumours.

``generate_subject(seed, ...)`` returns a :class:`SyntheticSubject`; ``write_subject``
writes NIfTI files, labels, parameters and optionally a DICOM study.
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
