"""Tumour-free synthetic subjects are generated once per generator version (training.healthy.tumour_free_subjects)."""

from __future__ import annotations

from pathlib import Path


def test_tumour_free_subjects_are_written_again_by_a_new_generator(tmp_path: Path, monkeypatch) -> None:
    """A cached subject from another generator version would give figures of images the engine no longer makes."""
    import json

    import training.manifest
    from training.healthy import tumour_free_subjects
    from training.synth.subject import GENERATOR_VERSION

    written: list[int] = []
    monkeypatch.setattr(training.manifest, "write_synth_subjects", lambda spec, out: written.append(spec["seed"]))
    for seed, version in ((1, GENERATOR_VERSION), (2, "1.1"), (3, None)):
        folder = tmp_path / f"synth-{seed:06d}"
        folder.mkdir()
        (folder / "T1.nii.gz").write_bytes(b"")
        if version is not None:
            (folder / "params.json").write_text(json.dumps({"generator_version": version}))
    folders = tumour_free_subjects([1, 2, 3, 4], tmp_path)
    assert [f.name for f in folders] == ["synth-000001", "synth-000002", "synth-000003", "synth-000004"]
    assert written == [2, 3, 4]  # the current version is kept; an old, unreadable or missing one is written
