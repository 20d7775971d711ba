"""Shared synthetic subjects for the synth tests (generated once per session, 2 mm grid, one per anatomy source)."""

from __future__ import annotations

import pytest

from dicom_node.sequences import SequenceLabel

ALL_SEQUENCES = (
    SequenceLabel.LOCALIZER, SequenceLabel.T1, SequenceLabel.T1C, SequenceLabel.T2, SequenceLabel.FLAIR,
    SequenceLabel.PD, SequenceLabel.DWI, SequenceLabel.ADC, SequenceLabel.SWI,
)


@pytest.fixture(scope="session", autouse=True)
def _few_threads() -> None:
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tumour_subject():  # type: ignore[no-untyped-def]
    """A 3 T subject with a tumour and every sequence, on the 2 mm grid (a synthetic subject, not a patient)."""
    from training.synth import generate_subject

    return generate_subject(11, tumour=True, sequences=ALL_SEQUENCES, voxel_mm=2.0, vendor="siemens", anatomy="mni152")


@pytest.fixture(scope="session")
def cat12_subject():  # type: ignore[no-untyped-def]
    """The same draws on the CAT12 anatomy source (a synthetic subject, not a patient)."""
    from training.synth import generate_subject

    return generate_subject(11, tumour=True, sequences=ALL_SEQUENCES, voxel_mm=2.0, vendor="siemens", anatomy="cat12")


@pytest.fixture(params=["tumour_subject", "cat12_subject"])
def any_subject(request):  # type: ignore[no-untyped-def]
    """Each anatomy source's subject in turn."""
    return request.getfixturevalue(request.param)
