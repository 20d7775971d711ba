"""A head listed several times (``[data] real_negative_repeats``) is loaded once and sampled as often as listed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_a_repeated_item_is_loaded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nibabel as nib

    import training.datasets as ds

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for name, seed in (("a", 0), ("b", 1)):
        img = (np.random.default_rng(seed).random((20, 20, 20)) * 100 + 50).astype(np.float32)
        nib.save(nib.Nifti1Image(img, affine), str(tmp_path / f"{name}.nii.gz"))
    heads = {"a": {"FLAIR": str(tmp_path / "a.nii.gz")}, "b": {"FLAIR": str(tmp_path / "b.nii.gz")}}
    loads: list[str] = []
    real_call = ds.LoadSubjectd.__call__

    def counting(self: ds.LoadSubjectd, item: dict) -> dict:
        loads.append(str(item["id"]))
        return real_call(self, item)

    monkeypatch.setattr(ds.LoadSubjectd, "__call__", counting)
    items = ds.negative_items(heads, ["FLAIR"], repeats=4)
    data = ds.make_dataset(items, ["FLAIR"], [2.0, 2.0, 2.0], normalization="zscore_per_channel",
                           crop_indices_roi=[16, 16, 16])
    assert sorted(loads) == ["a", "b"]  # once each, not four times
    assert len(data) == 8
    for i, item in enumerate(items):  # each listing gives its own head's image
        assert str(data[i]["id"]) == item["id"]
    assert np.array_equal(np.asarray(data[0]["image"]), np.asarray(data[3]["image"]))
    assert not np.array_equal(np.asarray(data[0]["image"]), np.asarray(data[4]["image"]))
