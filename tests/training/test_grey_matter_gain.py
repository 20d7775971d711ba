"""Grey-matter gain (``[train.domain_randomisation] gm_gain_prob``): the generator's tissue map reaches the crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_a_tissue_map_beside_the_labels_becomes_a_grey_matter_fraction(tmp_path: Path) -> None:
    """LoadSubjectd puts the map's grey matter on the model grid; crops with and without one batch together."""
    import nibabel as nib
    from monai.data import list_data_collate

    from training.datasets import make_dataset, negative_items, train_transforms

    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    rng = np.random.default_rng(0)
    tissue = np.zeros((48, 48, 48), np.int16)
    tissue[6:42, 6:42, 6:42] = 3  # white matter
    tissue[6:42, 6:42, 6:12] = 2  # a slab of grey matter
    img = np.where(tissue > 0, np.where(tissue == 2, 300.0, 200.0), 0) + rng.random((48, 48, 48)) * 5
    label = np.zeros((48, 48, 48), np.int16)
    label[20:26, 20:26, 24:30] = 2
    for name, data in (("FLAIR", img.astype(np.float32)), ("labels", label), ("tissue", tissue)):
        nib.save(nib.Nifti1Image(data, affine), str(tmp_path / f"{name}.nii.gz"))
    item = {"id": "s", "sequences": {"FLAIR": str(tmp_path / "FLAIR.nii.gz")}, "labels": str(tmp_path / "labels.nii.gz"),
            "label_map": {}, "tissue": str(tmp_path / "tissue.nii.gz")}
    plain = dict(item, id="plain")
    plain.pop("tissue")
    items = [item, plain, *negative_items({"h": {"FLAIR": str(tmp_path / "FLAIR.nii.gz")}}, ["FLAIR"])]
    loaded = make_dataset(items, ["FLAIR"], [2.0, 2.0, 2.0], normalization="zscore_per_channel", raw=True,
                          crop_indices_roi=[16, 16, 16], gm_maps=True)
    first = loaded[0]
    gm = np.asarray(first["gm"])[0].astype(float) / 255
    assert gm.shape == np.asarray(first["image"]).shape[1:]
    assert gm[4:20, 4:20, 4:6].mean() > 0.9 and gm[:, :, 8:].max() == 0  # the slab, on the 2 mm grid
    assert 0.1 < (first["sample_gm"][0] > 128).mean() < 0.3  # about the slab's share of the head samples
    assert "gm" not in loaded[1] and "gm" not in loaded[2]  # no map, no fraction

    tr = train_transforms([16, 16, 16], 0.0, 1, (1, 1), domain_randomisation={"gm_gain_prob": 1.0},
                          cached_indices=True)
    tr.set_random_state(0)
    crops = [tr(dict(loaded[i]))[0] for i in range(3)]
    batch = list_data_collate(crops)
    assert tuple(batch["image"].shape) == (3, 1, 16, 16, 16)
