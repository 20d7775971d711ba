"""Scanner-shift views: what another scanner changes in an image, drawn at random for a pretraining view.

Two acquisitions of one head on two scanners differ in contrast (sequence implementation, field strength),
receive-coil bias, slice thickness and noise, not in anatomy. An objective whose two views of a crop must
agree (``prism``'s structure head, ``swin_ssl``'s contrastive pair) and whose decoder rebuilds the clean
crop learns features that do not change with the scanner when each view is shifted independently — PRISM's
claim (robustness across acquisition protocols) made concrete for the synthetic families.

Per sample (one scanner: the same shift for every sequence of the sample), each drawn uniformly up to
``strength`` × its full range:

* gamma of the intensities (MONAI ``RandAdjustContrast``, 0.7–1.5 at strength 1);
* a smooth multiplicative receive field (MONAI ``RandBiasField``, degree 3, coefficients up to 0.3);
* through-plane blur along S, the last axis (MONAI ``GaussianSmooth``, sigma up to 1 voxel: a slice
  about 2.4 voxels thick);
* Gaussian noise (MONAI ``RandGaussianNoise``, SD up to 0.1 of the z-scored crop).

Each channel keeps its crop mean and SD (the inputs are z-scored over the head), absent channels stay zero.
"""

from __future__ import annotations

import torch
from monai.transforms import GaussianSmooth, RandAdjustContrast, RandBiasField, RandGaussianNoise

__all__ = ["scanner_shift"]


def _one(x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """Shift one ``(C, X, Y, Z)`` sample; ``seed`` makes the draw."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(4, generator=g).tolist()
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    y = x - low  # non-negative, as the signal a coil multiplies
    gamma = RandAdjustContrast(prob=1.0, gamma=(1.0 - 0.3 * strength * u[0], 1.0 + 0.5 * strength * u[0]))
    gamma.set_random_state(seed)
    y = torch.as_tensor(gamma(y)).as_subclass(torch.Tensor)
    bias = RandBiasField(degree=3, coeff_range=(0.0, 0.3 * strength * u[1] + 1e-6), prob=1.0)
    bias.set_random_state(seed + 1)
    field = torch.as_tensor(bias(torch.ones_like(y[:1]))).as_subclass(torch.Tensor)
    y = y * field
    sigma = float(strength * u[2])
    if sigma > 0.05:
        y = torch.as_tensor(GaussianSmooth(sigma=(0.0, 0.0, sigma))(y)).as_subclass(torch.Tensor)
    noise = RandGaussianNoise(prob=1.0, mean=0.0, std=0.1 * strength * u[3] + 1e-6)
    noise.set_random_state(seed + 2)
    y = torch.as_tensor(noise(y)).as_subclass(torch.Tensor).to(x.dtype)
    dims = (1, 2, 3)
    mu_x, sd_x = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
    mu_y, sd_y = y.mean(dim=dims, keepdim=True), y.std(dim=dims, keepdim=True)
    return (y - mu_y) / sd_y.clamp_min(1e-6) * sd_x + mu_x


def scanner_shift(image: torch.Tensor, present: torch.Tensor, strength: float) -> torch.Tensor:
    """Draw one scanner shift per sample of a batch.

    Parameters
    ----------
    image : torch.Tensor
        ``(B, C, X, Y, Z)`` crops, z-scored per channel over the head; Z is the S axis.
    present : torch.Tensor
        ``(B, C)`` 0/1: which channels were acquired (the others stay zero).
    strength : float
        0 returns ``image`` unchanged; 1 draws over the full ranges of the module's docstring.

    Returns
    -------
    torch.Tensor
        The shifted batch, same shape, dtype and device. The draws follow ``torch``'s global
        generator, so a seeded training step is reproducible.
    """
    if strength <= 0.0:
        return image
    if image.ndim != 5:
        raise ValueError(f"scanner_shift needs (B, C, X, Y, Z) crops; got shape {list(image.shape)}.")
    seeds = torch.randint(0, 2**31 - 1000, (image.shape[0],)).tolist()
    cpu = image.detach().to("cpu", torch.float32)
    out = torch.stack([_one(cpu[i], strength, int(s)) for i, s in enumerate(seeds)])
    mask = present.to("cpu", torch.float32).view(*present.shape, 1, 1, 1)
    return (out * mask).to(image.device, image.dtype)
