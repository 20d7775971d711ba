"""The Volume dataclass: validation and derived geometry."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_node.io.volume import Volume


def test_derived_geometry_and_with_data() -> None:
    affine = np.array([[-0.5, 0, 0, 10], [0, -0.75, 0, 20], [0, 0, 2.0, -5], [0, 0, 0, 1]])
    vol = Volume(
        np.zeros((4, 3, 2), np.float32),
        affine,
        "1.2.3",
        meta={"series_number": 5, "series_description": "t2"},
        split="b0",
    )
    assert vol.shape == (4, 3, 2) and vol.spacing == (0.5, 0.75, 2.0)
    assert np.allclose(vol.affine_lps[:3, 3], [-10, -20, -5])
    assert vol.label == "b0" and vol.name == "series 5 't2' [b0]"
    labels = vol.with_data(np.ones((4, 3, 2), np.uint8))
    assert labels.data.dtype == np.uint8 and np.array_equal(labels.affine, vol.affine)
    assert labels.affine is not vol.affine
    with pytest.raises(ValueError, match="differs"):
        vol.with_data(np.ones((4, 3, 3)))


def test_invalid_volumes_are_refused() -> None:
    with pytest.raises(ValueError, match="must be 3-D"):
        Volume(np.zeros((4, 3)), np.eye(4), "1")
    with pytest.raises(ValueError, match="must be 4x4"):
        Volume(np.zeros((4, 3, 2)), np.eye(3), "1")
    with pytest.raises(ValueError, match="2 slices but 1 slice references"):
        Volume(np.zeros((4, 3, 2)), np.eye(4), "1", slice_refs=[("1.2", "1.3", None)])
