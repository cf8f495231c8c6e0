"""Imaging perturbations of raw crops (noise, blur, brightness, contrast, shift) for `cellkit.tl.robustness`.

Perturbations act on raw crops ``(B, C, S, S)`` float32 (pixel units, before any model's
normalization), so every model sees the same perturbed pixels. Strengths are in units of
the store's per-channel pixel standard deviation (noise, brightness), pixels (blur sigma,
shift) or a fraction (contrast loss). Each is deterministic given ``seed`` and monotone in
severity: for a fixed seed, the perturbed crop moves further from the clean one as the
severity grows (the same noise field and shift direction are scaled, never redrawn).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .augment import blur

# Default severities, mild to strong, per perturbation.
SEVERITIES = {
    "noise": (0.1, 0.25, 0.5, 1.0),         # Gaussian noise std, x channel std
    "blur": (0.5, 1.0, 2.0, 4.0),           # Gaussian blur sigma, pixels (defocus)
    "brightness": (0.25, 0.5, 1.0, 2.0),    # additive offset, x channel std
    "contrast": (0.1, 0.25, 0.5, 0.75),     # contrast lost: x -> mean + (1 - s) (x - mean) per crop and channel
    "shift": (1.0, 2.0, 4.0, 8.0),          # translation, pixels, in a random direction per cell
}
# What a severity measures, per perturbation (axis labels).
SEVERITY_UNITS = {
    "noise": "noise SD (x channel SD)",
    "blur": "blur sigma (pixels)",
    "brightness": "offset added (x channel SD)",
    "contrast": "contrast lost (fraction)",
    "shift": "shift (pixels)",
}


def _generator(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1000003 + salt)


def gaussian_noise(x: torch.Tensor, severity: float, *, scale: Sequence[float] | None = None, seed: int = 0,
                   offset: int = 0) -> torch.Tensor:
    """``x + severity * scale[c] * N(0, 1)``, clipped at 0 (pixels are non-negative).

    ``scale``: per-channel std (C,) (default 1). ``offset``: row number of ``x[0]`` in the whole
    set, so each cell gets the same noise whatever the batching.
    """
    b = x.shape[0]
    noise = torch.stack([torch.randn(x.shape[1:], generator=_generator(seed, offset + i)) for i in range(b)])
    return (x + severity * _per_channel(scale, x) * noise).clamp_min(0)


def gaussian_blur(x: torch.Tensor, severity: float, **_) -> torch.Tensor:
    """Gaussian blur of sigma ``severity`` pixels (reflect padding; `cellkit.models.augment.blur`, the
    one used in training too); 0 = unchanged."""
    return blur(x, float(severity))


def brightness(x: torch.Tensor, severity: float, *, scale: Sequence[float] | None = None, **_) -> torch.Tensor:
    """Add ``severity * scale[c]`` to every pixel (a brighter illumination or background)."""
    return (x + severity * _per_channel(scale, x)).clamp_min(0)


def contrast(x: torch.Tensor, severity: float, **_) -> torch.Tensor:
    """Pull each crop's channels toward their mean: ``mean + (1 - severity) (x - mean)``, severity in [0, 1]."""
    if not 0 <= severity <= 1:
        raise ValueError(f"contrast severity must be in [0, 1], got {severity}")
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return mean + (1 - severity) * (x - mean)


def crop_shift(x: torch.Tensor, severity: float, *, seed: int = 0, offset: int = 0, **_) -> torch.Tensor:
    """Translate each crop by ``severity`` pixels in a random direction (seeded per cell), border pixels repeated.

    The shift is bilinear (sub-pixel), so it grows continuously with the severity.
    """
    b, _, h, w = x.shape
    angles = torch.stack([torch.rand((), generator=_generator(seed, 7919 + offset + i)) for i in range(b)]) * 2 * math.pi
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = severity * torch.cos(angles) * 2 / w
    theta[:, 1, 2] = severity * torch.sin(angles) * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _per_channel(scale, x):
    if scale is None:
        return torch.ones(1, x.shape[1], 1, 1)
    return torch.as_tensor(np.asarray(scale, np.float32)).view(1, -1, 1, 1)


PERTURBATIONS: dict[str, Callable] = {"noise": gaussian_noise, "blur": gaussian_blur, "brightness": brightness,
                                      "contrast": contrast, "shift": crop_shift}


def perturb_masks(masks: torch.Tensor, name: str, severity: float, *, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """Masks ``(B, 2, S, S)`` bool moved with the pixels: a shift moves them as `crop_shift` moves the crop
    (same seed and offset, same direction); the photometric perturbations leave them as they are."""
    if name != "shift":
        return masks
    return crop_shift(masks.float(), float(severity), seed=seed, offset=offset) > 0.5


def perturb(x: torch.Tensor, name: str, severity: float, *, scale=None, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """Apply perturbation ``name`` (a key of `PERTURBATIONS`) at ``severity`` to raw crops ``(B, C, S, S)``."""
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; choose from {sorted(PERTURBATIONS)}")
    return PERTURBATIONS[name](x, float(severity), scale=scale, seed=seed, offset=offset)
