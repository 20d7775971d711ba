"""Hard negatives (``[train.hard_negatives]``): a bundle's false positives become negative crop centres."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.ft_config import parse_finetune_config
from training.hard_negatives import HardNegativeIndicesd


def _item(hard: bool = True) -> dict:
    label = np.zeros((1, 10, 10, 10), dtype=np.float32)
    label[0, :2] = 1  # tumour in the first two i-slices
    head = np.zeros_like(label)
    head[0, :, :, :] = 1
    bg = np.flatnonzero((head[0] > 0) & (label[0] == 0))
    d = {"label": label, "label_bg_indices": bg, "label_fg_indices": np.flatnonzero(label[0] > 0)}
    if hard:
        mask = np.zeros_like(label, dtype=np.uint8)
        mask[0, 5, 5, 5:8] = 1  # three false-positive voxels in healthy tissue
        mask[0, 0, 0, 0] = 1  # one on the tumour: not a negative
        d["hard"] = mask
    return d


def test_the_fraction_of_negative_centres_on_hard_voxels() -> None:
    d = HardNegativeIndicesd(0.6)(_item())
    assert "hard" not in d
    bg = d["label_bg_indices"]
    hard = {int(np.ravel_multi_index((5, 5, k), (10, 10, 10))) for k in range(5, 8)}
    on_hard = np.isin(bg, list(hard)).mean()
    assert 0.55 < on_hard < 0.65  # drawn uniformly from the list: about 60 % of negative crops
    assert int(np.ravel_multi_index((0, 0, 0), (10, 10, 10))) not in set(bg.tolist())  # tumour voxel excluded


def test_an_item_without_a_mask_is_unchanged() -> None:
    item = _item(hard=False)
    d = HardNegativeIndicesd(0.5)(item)
    assert np.array_equal(d["label_bg_indices"], item["label_bg_indices"])


def test_fraction_must_be_a_share() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        HardNegativeIndicesd(1.0)


def _config(tmp_path: Path, table: str) -> dict:
    import tomllib

    return tomllib.loads(f'name = "x"\n[network.encoder]\nname = "swin3d"\n[data]\ndirs = ["{tmp_path}"]\n[train]\nmax_steps = 1\n'
                         f'[train.hard_negatives]\n{table}\n')


def test_config_names_a_wrong_subset_and_a_wrong_key(tmp_path: Path) -> None:
    ok = parse_finetune_config(_config(tmp_path, 'bundle = "b"\nsubsets = ["all", "T1C+FLAIR"]'), where="c.toml")
    assert ok.hard_negatives == {"bundle": "b", "fraction": 0.5, "subsets": ["all", "T1C+FLAIR"], "shift_average": None}
    one = parse_finetune_config(_config(tmp_path, 'bundle = "b"\nshift_average = [0]'), where="c.toml")
    assert one.hard_negatives is not None and one.hard_negatives["shift_average"] == [0]
    for bad in ("[0, 0]", "[-1]", "[]", "[65]"):
        with pytest.raises(ValueError, match="shift_average"):
            parse_finetune_config(_config(tmp_path, f'bundle = "b"\nshift_average = {bad}'), where="c.toml")
    with pytest.raises(ValueError, match=r"train\.hard_negatives\.subsets' names FLARE"):
        parse_finetune_config(_config(tmp_path, 'bundle = "b"\nsubsets = ["FLARE"]'), where="c.toml")
    with pytest.raises(ValueError, match="fractoin"):
        parse_finetune_config(_config(tmp_path, 'bundle = "b"\nfractoin = 0.3'), where="c.toml")


def test_the_cached_dataset_carries_the_mask_onto_the_model_grid(tmp_path: Path) -> None:
    """A subject on a 2 mm grid through make_dataset: the hard voxels are among the negative centres."""
    import nibabel as nib

    from training.datasets import make_dataset

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    rng = np.random.default_rng(0)
    img = (rng.random((24, 24, 24)) * 100 + 50).astype(np.float32)
    label = np.zeros((24, 24, 24), np.int16)
    label[2:6, 2:6, 2:6] = 2
    hard = np.zeros((24, 24, 24), np.uint8)
    hard[15, 15, 15:18] = 1
    for name, data in (("FLAIR", img), ("labels", label), ("hard", hard)):
        nib.save(nib.Nifti1Image(data, affine), str(tmp_path / f"{name}.nii.gz"))
    item = {"id": "s", "sequences": {"FLAIR": str(tmp_path / "FLAIR.nii.gz")}, "labels": str(tmp_path / "labels.nii.gz"),
            "label_map": {}, "hard_negatives": str(tmp_path / "hard.nii.gz")}
    with_hard = make_dataset([item], ["FLAIR"], [2.0, 2.0, 2.0], normalization="zscore_per_channel",
                             crop_indices_roi=[16, 16, 16], hard_fraction=0.5)[0]
    without = make_dataset([{k: v for k, v in item.items() if k != "hard_negatives"}], ["FLAIR"], [2.0, 2.0, 2.0],
                           normalization="zscore_per_channel", crop_indices_roi=[16, 16, 16])[0]
    assert "hard" not in with_hard
    bg = np.asarray(with_hard["label_bg_indices"])
    shape = np.asarray(with_hard["label"]).shape[1:]
    targets = [int(np.ravel_multi_index((15, 15, k), shape)) for k in range(15, 18)]
    assert 0.45 < np.isin(bg, targets).mean() < 0.55
    assert np.isin(np.asarray(without["label_bg_indices"]), targets).mean() < 0.001  # at most once each without it


def test_mining_with_one_tiling_leaves_the_shared_engine_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``shift_average = [0]`` mines with one tiling; the cached engine the node serves keeps the card's four."""
    import nibabel as nib

    from models.engine import InferenceEngine, get_engine
    from training.hard_negatives import mine

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    img = (np.random.default_rng(1).random((40, 40, 40)) * 100 + 50).astype(np.float32)
    nib.save(nib.Nifti1Image(img, affine), str(tmp_path / "FLAIR.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 40), np.int16), affine), str(tmp_path / "labels.nii.gz"))
    item = {"id": "s", "sequences": {"FLAIR": str(tmp_path / "FLAIR.nii.gz")}, "labels": str(tmp_path / "labels.nii.gz"),
            "label_map": {}}
    seen: list[list[int]] = []
    real_predict = InferenceEngine.predict

    def recording(self: InferenceEngine, *args: object, **kwargs: object) -> object:
        seen.append(list(self.shifts))
        return real_predict(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(InferenceEngine, "predict", recording)
    shared = get_engine("brain-tumour-demo", device="cpu")
    card_shifts = list(shared.shifts)
    assert len(card_shifts) > 1  # the shipped card averages several tilings
    mine("brain-tumour-demo", [item], ["T1", "T1C", "T2", "FLAIR"], ["FLAIR"], tmp_path / "one", shift_average=[0])
    mine("brain-tumour-demo", [item], ["T1", "T1C", "T2", "FLAIR"], ["FLAIR"], tmp_path / "card")
    assert seen == [[0], card_shifts]
    assert get_engine("brain-tumour-demo", device="cpu").shifts == card_shifts
    assert (tmp_path / "one" / "s.nii.gz").is_file()
