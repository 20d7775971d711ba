"""Real healthy heads of the corpus as NIfTI files, and the tumour model's false tumour on them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.realdata.corpus import CorpusCase, cache_dir, load_corpus
from training.realdata.volumes import load_volume

__all__ = ["false_tumour_table", "head_files", "model_channel"]

#: Sequences the tumour model takes; a head volume of another sequence is not given to it.
MODEL_SEQUENCES = ("T1", "T1C", "T2", "FLAIR")


def head_files(cases: Sequence[CorpusCase] | None = None, use: str | None = None) -> dict[str, dict[str, str]]:
    """``{case id: {sequence: NIfTI path}}`` for the real healthy head volumes of the corpus.

    Parameters
    ----------
    cases : sequence of CorpusCase, optional
        Default: the shipped corpus.
    use : str, optional
        Only cases of this use (``"test"`` to judge, ``"train"`` for training negatives).

    Returns
    -------
    dict
        Formats nibabel cannot save as they are (BrainBrowser raw) are written once as NIfTI
        under the corpus cache.
    """
    import nibabel as nib

    cases = load_corpus() if cases is None else cases
    out: dict[str, dict[str, str]] = {}
    for c in cases:
        channel = model_channel(c)
        if c.kind != "volume" or not c.brain or c.acquisition != "real" or channel is None:
            continue
        if use is not None and c.use != use:
            continue
        dst = _cache_path(c)
        if not dst.is_file():
            import numpy as np

            img = load_volume(c)
            data = np.asarray(img.dataobj, dtype=np.float32)
            while data.ndim > 3:  # a 4-D file gives the volume the corpus names
                data = data[..., int(c.extra.get("volume_index", 0))]
            dst.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(np.ascontiguousarray(data), img.affine), str(dst))
        out[c.id] = {channel: str(dst)}
    return out


def model_channel(case: CorpusCase) -> str | None:
    """The tumour model channel a head volume is given as: ``model_channel`` or its own label, if a model sequence."""
    channel = str(case.extra.get("model_channel", case.label))
    return channel if channel in MODEL_SEQUENCES else None


def false_tumour_table(cases: Sequence[CorpusCase], bundle: str = "brain-tumour-demo") -> list[dict[str, Any]]:
    """Print and return the false tumour volume (mL) per real head, its sequence alone.

    Templates (MNI152, Colin27) are measured too and marked as templates: they are averages,
    not acquisitions, and say nothing about real heads.
    """
    import time

    from models.engine import get_engine
    from training.healthy import false_tumour_table as measure
    from training.healthy import template_paths

    engine = get_engine(bundle, device="cpu")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for use in ("test", "train"):
        for r in measure(engine, head_files(cases, use), "real"):
            rows.append({**r, "use": use})
    templates = {name: {"T1": str(p)} for name, p in template_paths().items()}
    for r in measure(engine, templates, "template"):
        rows.append({**r, "use": "-"})
    seconds = time.perf_counter() - t0
    print(f"\n## False tumour on healthy heads ({bundle}), each sequence alone\n")
    print("| head | kind | corpus use | input | false tumour (mL) | necrotic core / oedema / enhancing (mL) | OOD score |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        by = " / ".join(f"{v:.2f}" for v in r["ml_by_label"])
        ood = "-" if r.get("ood") is None else f"{r['ood']:.2f}"
        print(f"| {r['head']} | {r['kind']} | {r['use']} | {r['subset']} | {r['ml']:.2f} | {by} | {ood} |")
    print(f"\n{len(rows)} predictions in {seconds:.1f} s. Target: < 1 mL on every real head of use 'test'.")
    return rows


def _cache_path(case: CorpusCase) -> Path:
    return cache_dir() / "nifti" / f"{case.id}.nii.gz"
