"""The image-based MRI sequence classifier: a small 2D CNN over a few slices of a series.

The network sees single slices, each resized to ``input_size`` squared after a robust
intensity scaling (its 99th percentile → 1); a series' verdict is the mean of its slices'
log-probabilities, softened by a temperature fitted on held-out data so that the
probabilities it reports are calibrated. It is a demonstration model trained on the
synthetic engine (``training.seqclf``), not a clinical one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BUNDLE_NAME",
    "OOD_FILE",
    "FeatureDensity",
    "SeqClfNet",
    "SequenceClassifier",
    "build_seqclf",
    "load_sequence_classifier",
    "prepare_slices",
]

#: The shipped bundle's name.
BUNDLE_NAME = "sequence-classifier"

#: The bundle file holding the feature statistics of the out-of-distribution score.
OOD_FILE = "ood.safetensors"


def _block(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SeqClfNet(nn.Module):
    """A four-stage 2D CNN encoder with a linear classification head.

    Parameters
    ----------
    n_classes : int
        Output classes.
    widths : sequence of int
        Channels per stage.
    dropout : float
        Dropout before the head.
    convs : int
        3x3 convolutions per stage.
    """

    def __init__(
        self, n_classes: int, widths: Sequence[int] = (16, 32, 64, 128), dropout: float = 0.2, convs: int = 1
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        c = 1
        for w in widths:
            stages.append(_block(c, w, convs))
            c = w
        self.encoder = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (B, n_classes) for slices (B, 1, H, W)."""
        return self.head(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled encoder features (B, C) the head sees, for slices (B, 1, H, W)."""
        return self.encoder(x).mean(dim=(2, 3))


class FeatureDensity:
    """Class-conditional Gaussians with one shared covariance over series embeddings.

    The out-of-distribution score of a series is its smallest squared Mahalanobis
    distance to a class mean, divided by the feature dimension (about 1 for a typical
    training series). A series far from every class the network was trained on gets a
    large score whatever its softmax says: a CNN trained on synthetic images can call a
    real FLAIR "ADC" at 0.98, and this is how the classifier knows to abstain.

    Parameters
    ----------
    class_means : torch.Tensor
        (n_classes, dim) mean embedding per class.
    precision : torch.Tensor
        (dim, dim) inverse of the shared (shrunk) covariance.
    threshold : float
        Scores above it are out of distribution.
    """

    def __init__(self, class_means: torch.Tensor, precision: torch.Tensor, threshold: float) -> None:
        if class_means.ndim != 2 or precision.shape != (class_means.shape[1], class_means.shape[1]):
            raise ValueError(
                f"feature statistics do not fit: means {tuple(class_means.shape)}, precision {tuple(precision.shape)}."
            )
        self.class_means = class_means.float()
        self.precision = precision.float()
        self.threshold = float(threshold)

    @classmethod
    def fit(cls, embeddings: torch.Tensor, labels: torch.Tensor, shrinkage: float = 0.1) -> FeatureDensity:
        """Fit class means and a shrunk shared covariance (threshold left at infinity).

        Parameters
        ----------
        embeddings : torch.Tensor
            (n, dim) series embeddings.
        labels : torch.Tensor
            (n,) class indices.
        shrinkage : float
            Weight of the scaled identity mixed into the covariance.
        """
        classes = sorted(int(c) for c in labels.unique())
        means = torch.stack([embeddings[labels == c].mean(dim=0) for c in classes])
        centred = embeddings - means[torch.searchsorted(torch.tensor(classes), labels)]
        cov = centred.T @ centred / max(len(embeddings) - len(classes), 1)
        dim = cov.shape[0]
        cov = (1 - shrinkage) * cov + shrinkage * torch.eye(dim) * torch.trace(cov) / dim
        return cls(means, torch.linalg.inv(cov), float("inf"))

    def score(self, embedding: torch.Tensor) -> float:
        """Return the score of one (dim,) series embedding."""
        d = self.class_means - embedding.float()[None]
        m = torch.einsum("ci,ij,cj->c", d, self.precision, d)
        return float(m.min()) / self.class_means.shape[1]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors to save (``class_means``, ``precision``)."""
        return {"class_means": self.class_means.contiguous(), "precision": self.precision.contiguous()}


def build_seqclf(cfg: dict[str, Any]) -> SeqClfNet:
    """Build the network from a card's ``network`` config (``n_classes``, ``widths``, ``dropout``, ``convs``)."""
    widths = tuple(int(w) for w in cfg.get("widths", (16, 32, 64, 128)))
    return SeqClfNet(int(cfg["n_classes"]), widths, float(cfg.get("dropout", 0.2)), int(cfg.get("convs", 1)))


def _scale(img: torch.Tensor) -> torch.Tensor:
    flat = img.flatten()
    if flat.numel() > 200_000:
        flat = flat[:: flat.numel() // 200_000 + 1]
    p99 = torch.quantile(flat.float(), 0.99)
    return img / p99 if p99 > 0 else img


def prepare_slices(volume: np.ndarray, size: int = 64, max_slices: int = 8) -> torch.Tensor:
    """Turn a (slices, rows, cols) series into classifier input.

    Picks up to ``max_slices`` slices around the middle with the most signal, pads each to a
    square, resizes it to ``size`` (antialiased) and scales the stack so that its 99th
    percentile is 1.

    Parameters
    ----------
    volume : numpy.ndarray
        Pixel values of one series, (slices, rows, cols).
    size : int
        Network input size.
    max_slices : int
        At most this many slices.

    Returns
    -------
    torch.Tensor
        float32 (n, 1, size, size).

    Raises
    ------
    ValueError
        If ``volume`` is not three-dimensional or is empty.
    """
    if volume.ndim != 3 or volume.size == 0:
        raise ValueError(f"the classifier needs a (slices, rows, cols) volume, got shape {volume.shape}.")
    vol = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    vol = torch.nan_to_num(vol).clamp_min(0)
    energy = vol.flatten(1).mean(dim=1)
    order = torch.argsort(energy, descending=True)
    keep = order[: max(1, min(max_slices, int((energy > 0.3 * energy.max()).sum().item()) or 1))]
    slices = vol[torch.sort(keep).values]
    n, h, w = slices.shape
    side = max(h, w)
    padded = torch.zeros((n, 1, side, side), dtype=torch.float32)
    padded[:, 0, (side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = slices
    out = F.interpolate(padded, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return _scale(out).clamp(0, 3)


class SequenceClassifier:
    """A loaded classifier: network, class names, input size and temperature.

    Parameters
    ----------
    net : SeqClfNet
        The network (eval mode).
    labels : sequence of str
        Class names (``SequenceLabel`` values; ``"T1"`` is the T1 family).
    input_size : int
        Slice size the network expects.
    temperature : float
        Calibration temperature applied to the averaged logits.
    """

    def __init__(
        self,
        net: SeqClfNet,
        labels: Sequence[str],
        input_size: int = 64,
        temperature: float = 1.0,
        density: FeatureDensity | None = None,
        calibrated_on_real: bool = False,
    ) -> None:
        self.net = net.eval()
        self._labels = tuple(labels)
        self.input_size = input_size
        self.temperature = temperature
        self.density = density
        self.calibrated_on_real = calibrated_on_real

    @torch.no_grad()
    def embedding(self, volume: np.ndarray) -> torch.Tensor:
        """The series embedding: the mean over its slices of the pooled encoder features."""
        return self.net.features(prepare_slices(volume, self.input_size)).mean(dim=0)

    def ood_score(self, volume: np.ndarray) -> float | None:
        """Return the out-of-distribution score of a series, or ``None`` without feature statistics."""
        if self.density is None:
            return None
        return self.density.score(self.embedding(volume))

    @property
    def ood_threshold(self) -> float | None:
        """Scores above this are out of distribution (``None`` without feature statistics)."""
        return None if self.density is None else self.density.threshold

    @property
    def labels(self) -> tuple[str, ...]:
        """The class names."""
        return self._labels

    @torch.no_grad()
    def logits(self, volume: np.ndarray) -> torch.Tensor:
        """Series logits: the mean over slices of log-softmax outputs (not yet tempered)."""
        x = prepare_slices(volume, self.input_size)
        return torch.log_softmax(self.net(x), dim=1).mean(dim=0)

    def predict(self, volume: np.ndarray) -> dict[str, float]:
        """Return calibrated class probabilities for a (slices, rows, cols) series."""
        probs = torch.softmax(self.logits(volume) / self.temperature, dim=0)
        return {label: float(p) for label, p in zip(self._labels, probs, strict=True)}


def load_sequence_classifier(name_or_path: str | Path = BUNDLE_NAME) -> SequenceClassifier:
    """Load the classifier bundle (``weights.safetensors`` + ``card.json``, sha256 checked).

    Parameters
    ----------
    name_or_path : str or Path
        A bundle name (``models/bundles/<name>``) or folder.

    Returns
    -------
    SequenceClassifier
        Ready for :meth:`SequenceClassifier.predict`.

    Raises
    ------
    models.bundle.BundleError
        If the bundle is missing, its weights do not match the card's sha256 or do not fit
        the network config.
    """
    from safetensors.torch import load_file

    from models.bundle import BundleError, load_bundle

    bundle = load_bundle(name_or_path)
    card = bundle.card
    if card.task != "sequence-classification":
        raise BundleError(f"bundle {card.name!r} is a {card.task!r} model, not a sequence classifier.")
    net = build_seqclf(card.network)
    state = {k: v.float() for k, v in load_file(str(bundle.weights_path), device="cpu").items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"bundle {card.name!r}: weights do not fit its network config ({exc}).") from exc
    pre = card.preprocessing
    return SequenceClassifier(
        net,
        [lab.name for lab in card.labels],
        int(pre.get("input_size", 64)),
        float(pre.get("temperature", 1.0)),
        density=_load_density(bundle.path, card.name, pre.get("ood")),
        calibrated_on_real=bool(pre.get("calibrated_on_real", False)),
    )


def _load_density(folder: Path, name: str, spec: Any) -> FeatureDensity | None:
    """Read the card's ``preprocessing.ood`` block and its feature statistics, sha256 checked."""
    from safetensors.torch import load_file

    from models.bundle import BundleError, sha256_file

    if spec is None:
        return None
    if not isinstance(spec, dict) or "threshold" not in spec or "sha256" not in spec:
        raise BundleError(f"bundle {name!r}: card key 'preprocessing.ood' needs 'threshold' and 'sha256'.")
    path = folder / str(spec.get("file", OOD_FILE))
    if not path.is_file():
        raise BundleError(f"bundle {name!r}: card key 'preprocessing.ood' names {path.name}, which is missing.")
    if sha256_file(path) != spec["sha256"]:
        raise BundleError(f"bundle {name!r}: {path.name} does not match the sha256 in 'preprocessing.ood'.")
    stats = load_file(str(path), device="cpu")
    try:
        return FeatureDensity(stats["class_means"], stats["precision"], float(spec["threshold"]))
    except (KeyError, ValueError) as exc:
        raise BundleError(f"bundle {name!r}: {path.name} is not usable ({exc}).") from exc
