"""Training crops: negative (tumour-free) crops are centred inside the head, never in the air."""

from __future__ import annotations

import numpy as np

from training.datasets import train_transforms


def _item() -> dict[str, object]:
    shape = (64, 64, 64)
    head = np.zeros((1, *shape), dtype=np.uint8)
    head[0, 40:60, 40:60, 40:60] = 1  # the head fills one corner; the rest is air
    image = np.where(head > 0, 1.0, -3.0).astype(np.float32).repeat(2, axis=0)
    label = np.zeros((1, *shape), dtype=np.float32)
    label[0, 50:53, 50:53, 50:53] = 2  # a small tumour inside the head
    return {"image": image, "label": label, "head": head, "present": np.array([True, True])}


def test_negative_crops_show_head_tissue_not_air() -> None:
    t = train_transforms([8, 8, 8], dropout_prob=0.0, num_samples=20, pos_neg=[0.0, 1.0])
    t.set_random_state(0)
    crops = t(_item())
    assert len(crops) == 20
    for c in crops:
        assert "head" not in c  # dropped after cropping: subjects' grids differ and would not collate
        img = np.asarray(c["image"])[0]
        centre = max(img[3, 4, 4], img[4, 4, 4])  # the left-right flip may move the centre by one voxel
        assert centre > 0, "a negative crop was centred in the air around the head"


def test_positive_crops_are_centred_on_tumour() -> None:
    t = train_transforms([8, 8, 8], dropout_prob=0.0, num_samples=10, pos_neg=[1.0, 0.0])
    t.set_random_state(0)
    for c in t(_item()):
        lab = np.asarray(c["label"])[0]
        assert 2 in (lab[3, 4, 4], lab[4, 4, 4])
