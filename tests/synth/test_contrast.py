"""Contrast physics on the generated images, measured on the tissue and BraTS label maps."""

from __future__ import annotations

import numpy as np

from dicom_node.sequences import SequenceLabel as S
from training.synth.tissue import Tissue


def _mean(img: np.ndarray, mask: np.ndarray) -> float:
    assert mask.sum() > 20, "the mask is (nearly) empty"
    return float(img[mask].mean())


def test_grey_white_csf_contrast(any_subject) -> None:  # type: ignore[no-untyped-def]
    s = any_subject
    wm, gm, csf = (s.tissue == Tissue.WM), (s.tissue == Tissue.GM), (s.tissue == Tissue.CSF)
    t1, t2, flair = s.images[S.T1], s.images[S.T2], s.images[S.FLAIR]
    assert _mean(t1, wm) > _mean(t1, gm) > _mean(t1, csf)
    assert _mean(t2, wm) < _mean(t2, gm) < _mean(t2, csf)
    assert _mean(flair, csf) < 0.6 * _mean(flair, wm)
    assert _mean(s.images[S.PD], gm) > _mean(s.images[S.PD], wm)  # proton density: GM above WM


def test_deep_grey_matter_lies_between_white_matter_and_cortex(any_subject) -> None:  # type: ignore[no-untyped-def]
    """Deep nuclei are not rendered with the cortex's relaxation times (generator 1.2): on T2 and FLAIR the grey
    matter deep below the brain's surface is darker than the cortex and still brighter than white matter."""
    from scipy import ndimage

    from training.healthy import brain_depth

    s = any_subject
    depth = brain_depth(s.tissue, np.abs(np.diag(s.affine)[:3]))
    away = ~ndimage.binary_dilation(s.labels > 0, iterations=4)  # not the oedema's partial volume
    gm, wm = (s.tissue == Tissue.GM) & away, (s.tissue == Tissue.WM) & away
    # cortex: below its outer millimetres (their partial volume with CSF darkens FLAIR)
    deep, cortex = gm & (depth >= 25.0), gm & (depth >= 4.0) & (depth < 15.0)
    for label in (S.T2, S.FLAIR):
        img = s.images[label]
        assert _mean(img, wm) < _mean(img, deep) < _mean(img, cortex) - 0.1 * (_mean(img, cortex) - _mean(img, wm))


def test_thick_grey_matter_is_rendered_as_folded_cortex(any_subject) -> None:  # type: ignore[no-untyped-def]
    """Slabs of cortex thicker than a real cortex (an averaging artefact of the templates) hold sulcal CSF and gyral
    white matter (generator 1.3): on FLAIR they are darker than thin cortex, where a uniform block of grey matter
    (generator 1.2) was brighter."""
    from scipy import ndimage

    from training.healthy import brain_depth

    s = any_subject
    vox = np.abs(np.diag(s.affine)[:3])
    depth = brain_depth(s.tissue, vox)
    away = ~ndimage.binary_dilation(s.labels > 0, iterations=4)
    inner = ndimage.distance_transform_edt(s.tissue == Tissue.GM, sampling=vox)  # mm to the nearest non-grey voxel
    cortex = (s.tissue == Tissue.GM) & away & (depth >= 4.0) & (depth < 15.0)
    thick, thin = cortex & (inner >= 4.0), cortex & (inner < 3.0)
    flair, wm = s.images[S.FLAIR], (s.tissue == Tissue.WM) & away
    assert _mean(flair, thick) < _mean(flair, thin) - 0.03 * _mean(flair, wm)


def test_tumour_compartments(any_subject) -> None:  # type: ignore[no-untyped-def]
    s = any_subject
    wm = s.tissue == Tissue.WM
    et, ed = s.labels == 3, s.labels == 2
    t1, t1c, flair = s.images[S.T1], s.images[S.T1C], s.images[S.FLAIR]
    # oedema bright on FLAIR
    assert _mean(flair, ed) > 1.2 * _mean(flair, wm)
    # enhancing rim: brighter on T1C than on T1, relative to WM
    et_gain = (_mean(t1c, et) / _mean(t1c, wm)) / (_mean(t1, et) / _mean(t1, wm))
    ed_gain = (_mean(t1c, ed) / _mean(t1c, wm)) / (_mean(t1, ed) / _mean(t1, wm))
    assert et_gain > 1.3
    assert abs(ed_gain - 1.0) < 0.1


def test_diffusion_images(any_subject) -> None:  # type: ignore[no-untyped-def]
    s = any_subject
    gm, csf = (s.tissue == Tissue.GM), (s.tissue == Tissue.CSF)
    adc = s.images[S.ADC]
    assert _mean(adc, csf) > 1.5 * _mean(adc, gm)
    assert _mean(s.images[S.DWI], csf) < _mean(s.extras["DWI_b0"], csf) * 0.2
    assert 500.0 < float(np.median(adc[s.tissue == Tissue.WM])) < 1100.0


def test_images_are_float32_on_the_grid(any_subject) -> None:  # type: ignore[no-untyped-def]
    s = any_subject
    for img in s.images.values():
        assert img.dtype == np.float32
        assert img.shape == s.labels.shape == s.tissue.shape
    assert s.affine[0, 0] == 2.0
    assert set(np.unique(s.labels)) <= {0, 1, 2, 3}
    assert s.params["sequences"]["FLAIR"]["ti"] is not None


def test_venous_sinus(any_subject) -> None:  # type: ignore[no-untyped-def]
    """The superior sagittal sinus: short T2* (dark on SWI), enhances with gadolinium."""
    s = any_subject
    wm, blood = s.tissue == Tissue.WM, s.tissue == Tissue.BLOOD
    gain = (_mean(s.images[S.T1C], blood) / _mean(s.images[S.T1C], wm)) / (
        _mean(s.images[S.T1], blood) / _mean(s.images[S.T1], wm)
    )
    assert gain > 1.3
    assert _mean(s.images[S.SWI], blood) < _mean(s.images[S.SWI], wm)
