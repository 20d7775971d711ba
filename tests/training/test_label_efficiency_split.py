"""The cross-protocol split: roles, families and seeds of every subject, before anything is generated."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.training.pretrain_support import CONFIGS

_TEST_ROLES = ("test-same", "test-other", "probe-test", "validation")
_TRAIN_ROLES = ("labelled", "unlabelled", "probe-train")


@pytest.mark.parametrize("name", ["label-efficiency.toml", "label-efficiency-scanners.toml", "label-efficiency-tiny.toml"])
def test_shipped_configs_never_share_a_test_subject_with_training(name: str) -> None:
    from training.pretrain.families import parse_families, plan_split

    cfg = tomllib.loads((CONFIGS / name).read_text())
    families, labelled = parse_families(cfg.get("families"))
    plan = plan_split(cfg["data"], families, labelled)
    seeds = {role: [s.seed for s in subjects] for role, subjects in plan.items()}
    for role, found in seeds.items():
        assert len(found) == len(set(found)), f"{role} repeats a subject"
    trained = {s for r in _TRAIN_ROLES for s in seeds[r]}
    for role in _TEST_ROLES:
        assert not set(seeds[role]) & trained, f"a {role} subject is also a pretraining or fine-tuning subject"
    assert not set(seeds["test-same"]) & set(seeds["test-other"])
    # labels from one family, other-protocol tests from the others, the unlabelled pool from all
    assert {s.family for s in plan["labelled"]} == {s.family for s in plan["test-same"]} == {labelled}
    assert {s.family for s in plan["probe-train"]} == {labelled}
    assert {s.family for s in plan["test-other"]} == {f.name for f in families} - {labelled}
    assert {s.family for s in plan["unlabelled"]} == {f.name for f in families}
    assert len(plan["labelled"]) >= max(cfg["finetune"]["labelled"])


def test_plan_is_deterministic_and_follows_the_engines_t1_draw() -> None:
    from training.pretrain.families import DEFAULT_FAMILIES, _predicted_t1_kind, plan_split
    from training.synth import generate_subject

    data = {"seed": 123000, "labelled_subjects": 2, "test_other_subjects": 1}
    one = plan_split(data, DEFAULT_FAMILIES, DEFAULT_FAMILIES[0].name)
    assert one == plan_split(data, DEFAULT_FAMILIES, DEFAULT_FAMILIES[0].name)
    s = one["test-other"][0]
    fam = next(f for f in DEFAULT_FAMILIES if f.name == s.family)
    drawn = generate_subject(s.seed, voxel_mm=8.0, sequences=["T1"], tumour=s.tumour, **fam.synth_kwargs())
    assert drawn.params["t1_kind"] == fam.t1_kind == _predicted_t1_kind(s.seed, s.tumour)
    assert drawn.params["vendor"] == fam.vendor and drawn.params["field_strength"] == fam.field_strength


def test_labelled_subsets_are_seeded_nested_and_bounded() -> None:
    from training.pretrain.label_efficiency import labelled_subset

    assert labelled_subset(24, 5, 7) == labelled_subset(24, 5, 7)
    assert labelled_subset(24, 2, 7) == labelled_subset(24, 5, 7)[:2]
    assert labelled_subset(24, 5, 7) != labelled_subset(24, 5, 8)
    with pytest.raises(ValueError, match=r"finetune\.labelled"):
        labelled_subset(4, 5, 0)


def test_bad_family_tables_are_sentences() -> None:
    from training.pretrain.families import parse_families

    with pytest.raises(ValueError, match=r"families\.labelled"):
        parse_families({"labelled": "nope"})
    with pytest.raises(ValueError, match="t1_kind"):
        parse_families({"define": [{"name": "a", "vendor": "ge", "field_strength": 3.0, "t1_kind": "flash"},
                                   {"name": "b", "vendor": "ge", "field_strength": 1.5, "t1_kind": "se"}]})
    with pytest.raises(ValueError, match="two or more"):
        parse_families({"define": [{"name": "a", "vendor": "ge", "field_strength": 3.0, "t1_kind": "se"}]})
    with pytest.raises(ValueError, match="slice_mm"):
        parse_families({"define": [{"name": "a", "vendor": "ge", "field_strength": 3.0, "t1_kind": "se", "slice_mm": -1},
                                   {"name": "b", "vendor": "ge", "field_strength": 1.5, "t1_kind": "se"}]})


def test_a_family_fixes_the_bias_field_and_thickens_its_2d_slices() -> None:
    """The scanners of label-efficiency-scanners.toml: bias amplitude goes to the engine; 2D series (not a 3D
    MPRAGE T1) are blurred along superior-inferior only."""
    import numpy as np

    from training.pretrain.families import Family
    from training.synth import generate_subject

    fam = Family("x", "ge", 1.5, "mprage", bias_amplitude=0.3, slice_mm=6.0)
    drawn = generate_subject(123001, voxel_mm=8.0, sequences=["T1"], tumour=False, **fam.synth_kwargs())
    assert drawn.params["bias_amplitude"] == 0.3
    rng = np.random.default_rng(0)
    t1 = rng.random((6, 6, 12)).astype(np.float32)
    in_plane = np.repeat(rng.random((6, 6, 1)), 12, axis=2).astype(np.float32)  # constant along S
    along_s = np.tile(rng.random((1, 1, 12)), (6, 6, 1)).astype(np.float32)  # varies along S only
    images = {"FLAIR": along_s.copy(), "T2": in_plane.copy(), "T1": t1.copy()}
    fam.thick_slices(images, voxel_mm=2.0)
    assert np.array_equal(images["T1"], t1)  # 3D MPRAGE: as rendered
    assert np.allclose(images["T2"], in_plane, atol=1e-6)  # nothing happens across the plane
    assert images["FLAIR"].std(axis=2).mean() < 0.6 * along_s.std(axis=2).mean()  # smoothed along S
    se = Family("y", "ge", 1.5, "se", slice_mm=6.0)
    images = {"T1": along_s.copy()}
    se.thick_slices(images, voxel_mm=2.0)
    assert not np.allclose(images["T1"], along_s)  # 2D spin-echo T1 is thick too
    flat = Family("z", "ge", 1.5, "se")
    images = {"FLAIR": along_s.copy()}
    flat.thick_slices(images, voxel_mm=2.0)
    assert np.array_equal(images["FLAIR"], along_s)


def test_workers_share_the_cells_without_overlap_or_gap() -> None:
    """Every worker deals from the same arm order (the first full run had one order per worker and
    skipped some cells while repeating others)."""
    from training.pretrain.label_efficiency import arm_order, worker_cells

    arms = arm_order(["prism", "cross_sequence"])
    assert arms == ["scratch", "prism", "cross_sequence"]
    assert arm_order(["cross_sequence", "prism"]) == ["scratch", "cross_sequence", "prism"]
    every = [(k, r, a) for k in (5, 2, 20) for r in range(3) for a in arms]
    for n in (1, 2, 3):
        dealt = [c for i in range(n) for c in worker_cells(arms, [5, 2, 20], 3, (i, n))]
        assert sorted(dealt) == sorted(every) and len(dealt) == len(set(dealt))
    assert worker_cells(arms, [5], 1, (1, 2)) == [(5, 0, "prism")]


def test_an_objective_variant_is_its_own_arm_with_its_own_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``prism+shift`` pretrains the registered ``prism`` with the variant's options, in its own folder and digest."""
    import training.pretrain.run as run_module
    from training.pretrain import label_efficiency as le

    cfg = tomllib.loads((CONFIGS / "label-efficiency-scanners.toml").read_text())
    cfg["pretrain"]["objectives"] = ["prism", "prism+shift", "dino2d+x"]
    cfg["pretrain"]["options"]["prism+shift"] = {**cfg["pretrain"]["options"]["prism"], "scanner_shift": 1.0}
    cfg["pretrain"]["options"]["dino2d+x"] = cfg["pretrain"]["options"]["dino2d"]
    assert le.objective_of("prism+shift") == "prism" and le.objective_of("prism") == "prism"
    assert le.baselines(cfg["pretrain"]["objectives"]) == {"prism": "scratch", "prism+shift": "scratch",
                                                         "dino2d+x": "scratch2d"}
    assert le.arm_settings(cfg, "test", "prism") != le.arm_settings(cfg, "test", "prism+shift")
    seen: dict[str, Any] = {}

    def fake_train(parsed: Any, resume: bool = False) -> dict[str, str]:
        seen["objective"], seen["options"], seen["out"] = parsed.objective, parsed.options, parsed.raw["run"]["out_dir"]
        Path(seen["out"]).mkdir(parents=True)
        return {"encoder": str(tmp_path / "enc")}

    monkeypatch.setattr(run_module, "train", fake_train)
    subject = tmp_path / "s"
    subject.mkdir()
    le._pretrain("prism+shift", cfg, tmp_path / "work", [str(subject)], [str(subject)])
    assert seen["objective"] == "prism"
    assert seen["options"].scanner_shift == 1.0
    assert Path(seen["out"]).name == "prism+shift"
