"""Signal equations and per-tissue contrast (no images)."""

from __future__ import annotations

import numpy as np
import pytest

from training.synth.physics import (
    diffusion,
    flair_null_ti,
    inversion_recovery,
    mprage,
    spin_echo,
    spoiled_gre,
    with_gadolinium,
)
from training.synth.tissue import Tissue, gd_concentration_mm, tissue_parameters


@pytest.mark.parametrize("field", [1.5, 3.0])
def test_t1_weighted_contrast_spin_echo_and_mprage(field: float) -> None:
    p = tissue_parameters(field)
    ti = 900.0 if field == 3.0 else 1100.0
    for s in (spin_echo(p, 500.0, 10.0), mprage(p, 2000.0, 3.0, ti, 9.0)):
        assert s[Tissue.WM] > s[Tissue.GM] > s[Tissue.CSF]
        assert s[Tissue.FAT] > s[Tissue.WM]


@pytest.mark.parametrize("field", [1.5, 3.0])
def test_t2_and_flair_contrast(field: float) -> None:
    p = tissue_parameters(field)
    t2 = spin_echo(p, 5000.0, 95.0)
    assert t2[Tissue.CSF] > t2[Tissue.GM] > t2[Tissue.WM]
    ti = flair_null_ti(float(p.t1[Tissue.CSF]), 9000.0)
    flair = inversion_recovery(p, 9000.0, 100.0, ti)
    assert flair[Tissue.CSF] < 0.01 * flair[Tissue.WM]
    assert flair[Tissue.OEDEMA] > flair[Tissue.GM] > flair[Tissue.WM]


def test_flair_null_ti_nulls_the_given_t1() -> None:
    p = tissue_parameters(3.0)
    ti = flair_null_ti(float(p.t1[Tissue.CSF]), 10000.0)
    mz = 1 - 2 * np.exp(-ti / p.t1[Tissue.CSF]) + np.exp(-10000.0 / p.t1[Tissue.CSF])
    assert abs(mz) < 1e-9
    assert 2000.0 < ti < 3000.0


def test_gadolinium_enhances_only_where_the_barrier_is_broken() -> None:
    p = tissue_parameters(3.0)
    post = with_gadolinium(p, gd_concentration_mm())
    pre_s, post_s = spin_echo(p, 500.0, 10.0), spin_echo(post, 500.0, 10.0)
    ratio = post_s / np.where(pre_s > 0, pre_s, 1.0)
    assert ratio[Tissue.ENHANCING] > 1.5
    for t in (Tissue.WM, Tissue.GM, Tissue.CSF, Tissue.OEDEMA):
        assert ratio[t] == pytest.approx(1.0)


def test_diffusion_and_gre() -> None:
    p = tissue_parameters(1.5)
    b0, b1000 = diffusion(p, 6000.0, 80.0, 0.0), diffusion(p, 6000.0, 80.0, 1000.0)
    adc = np.log(b0[[Tissue.CSF, Tissue.GM, Tissue.WM]] / b1000[[Tissue.CSF, Tissue.GM, Tissue.WM]]) / 1000.0 * 1e6
    assert adc == pytest.approx([p.adc[Tissue.CSF], p.adc[Tissue.GM], p.adc[Tissue.WM]])
    gre_short, gre_long = spoiled_gre(p, 30.0, 5.0, 15.0), spoiled_gre(p, 30.0, 40.0, 15.0)
    assert gre_long[Tissue.WM] < gre_short[Tissue.WM]


def test_tissue_jitter_is_seeded() -> None:
    a = tissue_parameters(3.0, np.random.default_rng(1))
    b = tissue_parameters(3.0, np.random.default_rng(1))
    c = tissue_parameters(3.0, np.random.default_rng(2))
    assert np.array_equal(a.t1, b.t1)
    assert not np.array_equal(a.t1, c.t1)
