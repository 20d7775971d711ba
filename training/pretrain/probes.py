"""Frozen-encoder probes (BrainDINO / MRI-CORE style): sequence and acquisition parameters.

Each series of a probe subject (T1, T1C, T2, FLAIR, PD, DWI, ADC, SWI as the synthetic engine
makes them) is put on the evidence's grid, z-scored over the head, cropped around the head's
centre to ``[probe] roi`` and given to the encoder in every input channel (the encoder's
channel layout names sequences, so a series in "its" channel would give the answer away).
With ``[probe] placements = ["every", "alone"]`` each frozen encoder is also probed with the
series given alone in each channel in turn (the others zero, as a missing sequence is; features
averaged over the channels): mode ``frozen-linear-alone``, reported beside ``frozen-linear``,
never used for the verdict (a multi-channel pretrained encoder never saw one series copied into
every channel).
The features are the global means of every stage's map, concatenated.

* ``frozen-linear``: a linear head on the frozen encoder's features — logistic regression
  for the sequence, ridge regression for log TR, log TE and flip angle (scikit-learn; the
  regularisation chosen by cross-validation inside the probe's training series). Done for
  every pretrained encoder and for the untrained encoder (``scratch``: what the architecture
  gives without training).
* ``scratch-trained``: the same network from scratch (random encoder + the same linear
  heads), trained end to end on the same labelled series (cross-entropy + masked MSE,
  ``[probe] steps`` AdamW steps, random shifts of the crop and flips).

Probe labels come from the labelled protocol family only; the probe test series are
held-out subjects of that family (``same-protocol``) and of every other (``other-protocol``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["PLACEMENTS", "PROBE_SEQUENCES", "ProbeSet", "load_probe_set", "run_probes"]

#: The series the probe classifies (every kind the synthetic engine renders but the localizer).
PROBE_SEQUENCES: list[str] = ["T1", "T1C", "T2", "FLAIR", "PD", "DWI", "ADC", "SWI"]


class ProbeSet:
    """Series crops with their sequence index, normalised TR/TE/flip and family.

    Attributes
    ----------
    images : numpy.ndarray
        ``(N, 1, *pad)`` head-centred crops, padded by ``margin`` on each side for shifts.
    sequence : numpy.ndarray
        ``(N,)`` index into :data:`PROBE_SEQUENCES`.
    params : numpy.ndarray
        ``(N, 3)`` normalised log TR, log TE, flip (:func:`training.pretrain.sources.normalise_params`).
    param_mask : numpy.ndarray
        ``(N, 3)`` 1 where known.
    family : list of str
        Protocol family per series.
    """

    def __init__(self, images: np.ndarray, sequence: np.ndarray, params: np.ndarray, param_mask: np.ndarray,
                 family: list[str], margin: int) -> None:
        self.images, self.sequence, self.params, self.param_mask = images, sequence, params, param_mask
        self.family, self.margin = family, margin

    def __len__(self) -> int:
        """Number of series."""
        return int(self.sequence.shape[0])

    def crops(self, shift: np.ndarray | None = None) -> torch.Tensor:
        """The centred (or shifted, ``(N, 3)`` voxels) crops ``(N, 1, *roi)``."""
        m = self.margin
        roi = [s - 2 * m for s in self.images.shape[2:]]
        out = np.empty((len(self), 1, *roi), dtype=np.float32)
        for i in range(len(self)):
            a, b, c = (m + int(v) for v in (shift[i] if shift is not None else (0, 0, 0)))
            out[i] = self.images[i, :, a: a + roi[0], b: b + roi[1], c: c + roi[2]]
        return torch.from_numpy(out)

    def subset(self, mask: np.ndarray) -> ProbeSet:
        """The series where ``mask`` is true."""
        idx = np.flatnonzero(mask)
        return ProbeSet(self.images[idx], self.sequence[idx], self.params[idx], self.param_mask[idx],
                        [self.family[i] for i in idx], self.margin)


def _centre_crop(vol: np.ndarray, roi: Sequence[int]) -> np.ndarray:
    """Crop/pad ``(1, X, Y, Z)`` to ``roi`` around the centre of the non-zero voxels."""
    nz = np.argwhere(np.abs(vol[0]) > 0)
    centre = nz.mean(0).round().astype(int) if len(nz) else np.array(vol.shape[1:]) // 2
    out = np.zeros((1, *roi), dtype=np.float32)
    src, dst = [], []
    for c, s, r in zip(centre, vol.shape[1:], roi, strict=True):
        lo = int(c) - r // 2
        a, b = max(0, lo), min(s, lo + r)
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[(slice(None), *dst)] = vol[(slice(None), *src)]
    return out


def load_probe_set(subject_dirs: Sequence[str], voxel_mm: float, roi: Sequence[int], margin: int) -> ProbeSet:
    """Every probe series of the subject folders, as a :class:`ProbeSet`.

    Parameters
    ----------
    subject_dirs : sequence of str
        Synthetic subject folders (``<SEQ>.nii.gz``, ``params.json`` with ``protocol_family``).
    voxel_mm : float
        Grid spacing.
    roi : sequence of int
        Crop size.
    margin : int
        Extra voxels kept on every side for random shifts.

    Returns
    -------
    ProbeSet
        One entry per series found.

    Raises
    ------
    ValueError
        If no folder holds a probe series.
    """
    from training.pretrain.data import load_subject
    from training.pretrain.sources import UnlabelledSubject, _sequence_params, normalise_params

    images, seqs, params, masks, fams = [], [], [], [], []
    padded = [int(r) + 2 * margin for r in roi]
    for d in subject_dirs:
        folder = Path(d)
        meta = json.loads((folder / "params.json").read_text())
        per_seq = _sequence_params(meta)
        for idx, name in enumerate(PROBE_SEQUENCES):
            path = folder / f"{name}.nii.gz"
            if not path.is_file():
                continue
            vol, _ = load_subject(UnlabelledSubject(folder.name, {name: path}), [name], voxel_mm)
            images.append(_centre_crop(vol, padded))
            seqs.append(idx)
            p, m = normalise_params(per_seq.get(name, {}))
            params.append(p)
            masks.append(m)
            fams.append(str(meta.get("protocol_family", "")))
    if not images:
        raise ValueError(f"no probe series ({', '.join(PROBE_SEQUENCES)}) in {list(subject_dirs)[:3]}...")
    return ProbeSet(np.stack(images), np.array(seqs), np.array(params, dtype=np.float32),
                    np.array(masks, dtype=np.float32), fams, margin)


#: How a single series is given to a multi-channel encoder: ``every`` channel holds it, or it is
#: given ``alone`` in each channel in turn (the others zero, as a missing sequence is) and the
#: features are averaged over the channels.
PLACEMENTS = ("every", "alone")


class _ProbeNet(torch.nn.Module):
    """An encoder with linear heads on its pooled multi-stage features."""

    def __init__(self, encoder: torch.nn.Module, channels: int, feature_dim: int) -> None:
        super().__init__()
        self.encoder, self.channels = encoder, channels
        self.cls = torch.nn.Linear(feature_dim, len(PROBE_SEQUENCES))
        self.reg = torch.nn.Linear(feature_dim, 3)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.encoder(x)
        maps = maps if isinstance(maps, list | tuple) else [maps]
        return torch.cat([m.flatten(2).mean(2) for m in maps], dim=1)

    def features(self, x: torch.Tensor, placement: str = "every") -> torch.Tensor:
        if placement == "every":
            return self._pooled(x.expand(-1, self.channels, *x.shape[2:]))
        feats = []
        for c in range(self.channels):
            alone = x.new_zeros((x.shape[0], self.channels, *x.shape[2:]))
            alone[:, c] = x[:, 0]
            feats.append(self._pooled(alone))
        return torch.stack(feats).mean(0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.cls(f), self.reg(f)


def _encoder(cfg: dict[str, Any], enc: Path | None, seed: int) -> tuple[torch.nn.Module, int]:
    from models.encoders import build_encoder, load_encoder

    channels = len(cfg["data"]["sequences"])
    if enc is not None:
        encoder, _ = load_encoder(enc)
    else:
        torch.manual_seed(seed)
        encoder = build_encoder(dict(cfg["encoder"], in_channels=channels))
    return encoder, channels


@torch.no_grad()
def _features(net: _ProbeNet, x: torch.Tensor, placement: str = "every", batch: int = 16) -> np.ndarray:
    net.eval()
    return torch.cat([net.features(x[i: i + batch], placement) for i in range(0, len(x), batch)]).numpy()


def _score(name: str, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    if name == "sequence":
        return {"accuracy": float((pred == truth).mean())}
    resid = pred - truth
    var = float(((truth - truth.mean()) ** 2).mean())
    return {"r2": 1.0 - float((resid**2).mean()) / var if var > 0 else math.nan, "mae": float(np.abs(resid).mean())}


def _linear_probe(train_f: np.ndarray, train: ProbeSet, test_f: np.ndarray, test: ProbeSet) -> dict[str, np.ndarray]:
    """Sequence and parameter predictions of linear heads fitted on frozen features."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out: dict[str, np.ndarray] = {}
    folds = min(3, int(np.bincount(train.sequence).min()))
    # with fewer than 2 series of a class no cross-validation is possible: the default C (tiny runs only)
    head = LogisticRegressionCV(Cs=8, cv=folds, max_iter=2000) if folds >= 2 else LogisticRegression(max_iter=2000)
    clf = make_pipeline(StandardScaler(), head)
    out["sequence"] = clf.fit(train_f, train.sequence).predict(test_f)
    for j, name in enumerate(("tr", "te", "flip")):
        known = train.param_mask[:, j] > 0
        reg = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        out[name] = reg.fit(train_f[known], train.params[known, j]).predict(test_f)
    return out


def _train_scratch(net: _ProbeNet, train: ProbeSet, steps: int, batch: int, lr: float, seed: int) -> None:
    """Train the whole probe network from scratch (CE + masked MSE) on the training series."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    y = torch.from_numpy(train.sequence).long()
    p, pm = torch.from_numpy(train.params), torch.from_numpy(train.param_mask)
    net.train()
    for _ in range(steps):
        idx = rng.choice(len(train), size=min(batch, len(train)), replace=False)
        shift = rng.integers(-train.margin, train.margin + 1, size=(len(train), 3))
        x = train.crops(shift)[idx]
        for axis in range(2, 5):
            if rng.random() < 0.5:
                x = x.flip(axis)
        logits, reg = net(x)
        loss = torch.nn.functional.cross_entropy(logits, y[idx])
        loss = loss + ((reg - p[idx]) ** 2 * pm[idx]).sum() / pm[idx].sum().clamp(min=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()


def run_probes(cfg: dict[str, Any], encoders: dict[str, Path | None], train_dirs: Sequence[str],
               test_dirs: Sequence[str]) -> list[dict[str, Any]]:
    """Frozen linear probes of every encoder and the from-scratch network, as result rows.

    Parameters
    ----------
    cfg : dict
        The evidence config (``[probe]``: ``roi``, ``margin``, ``steps``, ``batch_size``,
        ``lr``; ``[data]``: ``voxel_mm``, ``sequences``, ``seed``; ``[families]``).
    encoders : dict
        Arm -> pretrained encoder folder, or None for ``scratch``.
    train_dirs, test_dirs : sequence of str
        Probe training subjects (labelled family) and test subjects (every family).

    Returns
    -------
    list of dict
        ``{"probe", "arm", "mode", "test", "accuracy" | "r2" and "mae", "n_train", "n_test"}``.
    """
    from training.pretrain.families import parse_families

    _, labelled = parse_families(cfg.get("families"))
    pc = cfg.get("probe", {})
    roi = [int(r) for r in pc.get("roi", [32, 32, 32])]
    margin = int(pc.get("margin", 2))
    placements = ["every"] + [p for p in pc.get("placements", ["every"]) if p != "every"]
    if any(p not in PLACEMENTS for p in placements):
        raise ValueError(f"config key 'probe.placements': {placements} must be among {list(PLACEMENTS)}.")
    vox = float(cfg["data"]["voxel_mm"])
    seed = int(cfg["data"].get("seed", 0))
    train = load_probe_set(train_dirs, vox, roi, margin)
    test_all = load_probe_set(test_dirs, vox, roi, margin)
    same = np.array([f == labelled for f in test_all.family])
    tests = {"same-protocol": test_all.subset(same), "other-protocol": test_all.subset(~same)}
    rows: list[dict[str, Any]] = []

    def emit(arm: str, mode: str, preds: dict[str, dict[str, np.ndarray]], seconds: float) -> None:
        for test, ts in tests.items():
            for name, pred in preds[test].items():
                truth = ts.sequence if name == "sequence" else ts.params[:, ("tr", "te", "flip").index(name)]
                known = np.ones(len(ts), bool) if name == "sequence" else ts.param_mask[:, ("tr", "te", "flip").index(name)] > 0
                rows.append({"probe": name, "arm": arm, "mode": mode, "test": test, **_score(name, pred[known], truth[known]),
                             "n_train": len(train), "n_test": int(known.sum()), "seconds": round(seconds, 1)})

    for arm, enc in encoders.items():
        started = time.perf_counter()
        encoder, channels = _encoder(cfg, enc, seed)
        with torch.no_grad():
            dim = int(sum(m.shape[1] for m in encoder(torch.zeros(1, channels, *roi))))
        net = _ProbeNet(encoder, channels, dim)
        train_x, test_x = train.crops(), {t: ts.crops() for t, ts in tests.items()}
        for placement in placements:
            train_f = _features(net, train_x, placement)
            preds = {t: _linear_probe(train_f, train, _features(net, test_x[t], placement), ts) for t, ts in tests.items()}
            emit(arm, "frozen-linear" if placement == "every" else "frozen-linear-alone", preds,
                 time.perf_counter() - started)
            started = time.perf_counter()
        if enc is None:  # the same network trained end to end on the same labels
            started = time.perf_counter()
            _train_scratch(net, train, int(pc.get("steps", 300)), int(pc.get("batch_size", 8)), float(pc.get("lr", 1e-3)), seed)
            scratch_preds: dict[str, dict[str, np.ndarray]] = {}
            for t, ts in tests.items():
                with torch.no_grad():
                    x = ts.crops()
                    outs = [net(x[i: i + 16]) for i in range(0, len(x), 16)]
                logits = torch.cat([o[0] for o in outs]).numpy()
                reg = torch.cat([o[1] for o in outs]).numpy()
                scratch_preds[t] = {"sequence": logits.argmax(1), "tr": reg[:, 0], "te": reg[:, 1], "flip": reg[:, 2]}
            emit(arm, "scratch-trained", scratch_preds, time.perf_counter() - started)
    return rows
