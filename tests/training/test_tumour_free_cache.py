"""Synthetic subjects are generated once per generator version (training.manifest.write_synth_subjects)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace


def test_a_subject_of_another_generator_version_is_written_again(tmp_path: Path, monkeypatch) -> None:
    """A cached subject from another generator version would give figures of images the engine no longer makes
    (the held-out tumour subjects of an evaluation folder, the tumour-free heads of training.healthy)."""
    import training.synth
    from training.healthy import tumour_free_subjects
    from training.manifest import write_synth_subjects
    from training.synth.subject import GENERATOR_VERSION

    generated: list[int] = []

    def generate(seed: int, **kwargs: object) -> SimpleNamespace:
        generated.append(seed)
        return SimpleNamespace(subject_id=f"synth-{seed:06d}", seed=seed)

    def write(subject: SimpleNamespace, out: Path) -> None:
        folder = Path(out) / subject.subject_id
        folder.mkdir(exist_ok=True)
        (folder / "params.json").write_text(json.dumps({"generator_version": GENERATOR_VERSION}))

    monkeypatch.setattr(training.synth, "generate_subject", generate)
    monkeypatch.setattr(training.synth, "write_subject", write)
    for seed, version in ((1, GENERATOR_VERSION), (2, "1.1"), (3, None)):
        folder = tmp_path / f"synth-{seed:06d}"
        folder.mkdir()
        (tmp_path / f".seed-{seed}").write_text(f"{folder.name}\n")
        if version is not None:
            (folder / "params.json").write_text(json.dumps({"generator_version": version}))
    write_synth_subjects({"subjects": 4, "seed": 1}, tmp_path)
    assert generated == [2, 3, 4]  # the current version is kept; an old, unreadable or missing one is written
    generated.clear()
    folders = tumour_free_subjects(range(1, 6), tmp_path)
    assert [f.name for f in folders] == [f"synth-{s:06d}" for s in range(1, 6)]
    assert generated == [5]  # now every one of 1-4 is current
