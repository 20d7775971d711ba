"""The two anatomy sources (MNI152 2009a, CAT12 Geodesic Shooting template): drawn per
subject, recorded, reproducible, and alike in what the images show."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_node.sequences import SequenceLabel as S
from training.synth import generate_subject
from training.synth.templates import ANATOMY_SOURCES, load_templates
from training.synth.tissue import Tissue


def test_source_is_drawn_per_subject_and_recorded() -> None:
    drawn = {generate_subject(seed, sequences=(S.T1,), voxel_mm=6.0, tumour=False).params["anatomy_source"]
             for seed in range(8)}
    assert drawn == set(ANATOMY_SOURCES)
    s = generate_subject(3, sequences=(S.T1,), voxel_mm=6.0, tumour=False, anatomy="cat12")
    assert s.params["anatomy_source"] == "cat12"
    assert "Template_4_GS.nii.gz" in s.params["template_files"]
    m = generate_subject(3, sequences=(S.T1,), voxel_mm=6.0, tumour=False, anatomy="MNI152")
    assert m.params["anatomy_source"] == "mni152"
    assert "Template_4_GS.nii.gz" not in m.params["template_files"]
    assert not np.array_equal(s.images[S.T1], m.images[S.T1])


def test_cat12_subject_is_reproducible() -> None:
    a = generate_subject(31, sequences=(S.FLAIR,), voxel_mm=3.0, tumour=True, anatomy="cat12")
    b = generate_subject(31, sequences=(S.FLAIR,), voxel_mm=3.0, tumour=True, anatomy="cat12")
    assert a.images[S.FLAIR].tobytes() == b.images[S.FLAIR].tobytes()
    assert a.labels.tobytes() == b.labels.tobytes() and a.labels.any()
    assert a.params == b.params


def test_unknown_source_gives_a_sentence() -> None:
    with pytest.raises(ValueError, match="anatomy source 'colin'"):
        generate_subject(1, voxel_mm=6.0, anatomy="colin")


def test_sources_share_grid_head_and_intracranial_space() -> None:
    # (an MNI152 entry cached by an earlier test may hold a head array its own small cache has since dropped)
    load_templates.cache_clear()
    mni, cat = load_templates(2.0, "mni152"), load_templates(2.0, "cat12")
    assert cat.head is mni.head  # one copy of the head channels per process
    assert cat.shape == mni.shape and np.array_equal(cat.affine, mni.affine)
    total_mni, total_cat = mni.brain.sum(axis=0), cat.brain.sum(axis=0)
    # the same intracranial space, divided differently between CSF, GM and WM
    assert abs(float(total_cat.sum()) / float(total_mni.sum()) - 1.0) < 0.02
    assert float((total_cat + cat.head.sum(axis=0)).max()) <= 1.0 + 1e-5
    vol = {src: [float(c.sum()) * 8e-3 for c in t.brain] for src, t in (("mni", mni), ("cat", cat))}  # cm^3
    for i in range(3):  # CSF, GM, WM: each within 30 % of the other source (adult variation)
        assert 0.7 < vol["cat"][i] / vol["mni"][i] < 1.3, vol
    assert vol["mni"][1] / vol["mni"][2] != pytest.approx(vol["cat"][1] / vol["cat"][2], rel=0.05)


def test_cat12_brain_follows_its_template() -> None:
    """The CAT12 source's brain is the template's GM and WM (resampled), not a copy of the MNI maps."""
    import nibabel as nib

    from training.synth.cat12 import cat12_paths

    img = nib.load(str(cat12_paths()["template"]))
    tpl_wm = np.asarray(img.dataobj[..., 1], dtype=np.float32)  # type: ignore[attr-defined]
    tpl_gm = np.asarray(img.dataobj[..., 0], dtype=np.float32)  # type: ignore[attr-defined]
    cat, mni = load_templates(1.0, "cat12"), load_templates(1.0, "mni152")
    # template GM + WM volume (cm^3, 1.5 mm voxels) against the source's (1 mm voxels; the deep-grey mixture of
    # generator 1.2 moves GM to WM and keeps their sum; the folded cortex of 1.3 moves 1.2 % of it to CSF);
    # WM alone grows by the moved share
    tpl = float((tpl_gm + tpl_wm).sum()) * 1.5**3 * 1e-3
    assert float(cat.brain[1:3].sum()) * 1e-3 == pytest.approx(tpl, rel=0.03)
    assert float(cat.brain[2].sum()) * 1e-3 > float(tpl_wm.sum()) * 1.5**3 * 1e-3
    corr = np.corrcoef(cat.brain[2][::3, ::3, ::3].ravel(), mni.brain[2][::3, ::3, ::3].ravel())[0, 1]
    assert 0.8 < corr < 0.99  # the same space, a different brain


def test_sources_give_the_same_contrasts(tumour_subject, cat12_subject) -> None:  # type: ignore[no-untyped-def]
    """Tissue-to-WM signal ratios agree within 10 % between the sources (same physics)."""
    for seq in (S.T1, S.T2, S.FLAIR, S.PD):
        ratios = []
        for s in (tumour_subject, cat12_subject):
            img = s.images[seq]
            wm = float(img[s.tissue == Tissue.WM].mean())
            ratios.append([float(img[s.tissue == t].mean()) / wm for t in (Tissue.CSF, Tissue.GM)])
        assert np.allclose(ratios[0], ratios[1], rtol=0.10), (seq, ratios)


def test_missing_deepmriprep_gives_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from training.synth.cat12 import cat12_paths

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepmriprep" else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"deepmriprep.*--anatomy mni152"):
        cat12_paths()


def test_tumour_centres_are_cerebral_white_matter_in_both_sources() -> None:
    """CAT12's WM reaches into brainstem and cerebellum; tumour centres stay where MNI152 puts them."""
    fractions = {}
    for src in ANATOMY_SOURCES:
        t = load_templates(2.0, src)
        ras = t.wm_centres @ t.affine[:3, :3].T + t.affine[:3, 3]
        fractions[src] = float(np.mean(ras[:, 2] < -20.0))  # below the tentorium's level (mm)
        assert float(t.brain[2][tuple(t.wm_centres[::97].T)].mean()) > 0.6  # centres lie in (smoothed) WM
    assert fractions["cat12"] < 0.05 and fractions["mni152"] < 0.05, fractions


def test_folded_cortex_moves_only_thick_cortical_grey_matter() -> None:
    """Generator 1.3: the centre of a grey slab thicker than a cortex becomes half grey, a quarter CSF and a quarter
    white matter; a slab as thin as a cortex, and deep grey matter (cortical weight 0), keep their grey matter."""
    from training.synth.templates import FOLD_SHARE, _folded_cortex

    brain = np.zeros((3, 40, 20, 20), dtype=np.float32)
    brain[1, 5:17] = 1.0  # a 12 mm slab
    brain[1, 25:29] = 1.0  # a 4 mm slab (a real cortex)
    brain[2] = 1.0 - brain[1]
    cortical = np.ones((40, 20, 20), dtype=np.float32)
    cortical[:, :, :10] = 0.0  # deep grey matter in the first half along the last axis
    before = brain.sum(axis=0).copy()
    _folded_cortex(brain, cortical)
    np.testing.assert_allclose(brain.sum(axis=0), before, atol=1e-6)
    centre = brain[:, 11, 10, 15]
    np.testing.assert_allclose(centre, [FOLD_SHARE / 2, 1.0 - FOLD_SHARE, FOLD_SHARE / 2], atol=1e-6)
    assert brain[1, 11, 10, 5] == 1.0  # deep
    assert (brain[1, 25:29] == 1.0).all()  # thin
