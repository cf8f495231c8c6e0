"""Batched microscopy augmentations in plain torch, run on the training device.

All randomness comes from one ``torch.Generator`` (on the batch's device), so a seeded
generator gives the same views every run. Inputs are normalized float crops ``(B, C, S, S)``;
outputs are ``(B, C, out_size, out_size)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch.nn import functional as F


@dataclass
class AugmentConfig:
    """Which augmentations run, and how strongly. Set a strength to 0 (or a flag to False) to turn one off.

    crop_scale : (min, max) area fraction kept by the random resized crop; ``None`` = centre crop only.
    crop_ratio : (min, max) aspect ratio of the random resized crop.
    flips, rot90 : random horizontal/vertical flips and multiples of 90-degree rotation.
    brightness : per-channel additive shift, uniform in +-brightness (normalized units).
    contrast : per-channel contrast factor, uniform in 1 +- contrast (about the channel mean).
    blur_prob, blur_sigma : probability of a Gaussian blur and its (min, max) sigma in pixels.
    noise_std : Gaussian noise, std uniform in [0, noise_std] per crop.
    channel_dropout : probability of zeroing each channel (never all channels of a crop).
    """

    crop_scale: tuple[float, float] | None = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    flips: bool = True
    rot90: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_std: float = 0.1
    channel_dropout: float = 0.0

    @classmethod
    def from_dict(cls, values: dict | None) -> "AugmentConfig":
        values = dict(values or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown augmentation option(s): {sorted(unknown)}")
        for key in ("crop_scale", "crop_ratio", "blur_sigma"):
            if values.get(key) is not None:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(shape, low, high, generator, device):
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def geometric(x: torch.Tensor, config: AugmentConfig, out_size: int, generator: torch.Generator) -> torch.Tensor:
    """Random resized crop, flips and 90-degree rotations in one bilinear resampling per crop.

    Without a random crop, the centre ``out_size`` square is taken (exactly, when the size
    difference is even and no resize is needed).
    """
    b, _, h, w = x.shape
    dev = x.device
    if config.crop_scale is not None:
        area = _uniform(b, *config.crop_scale, generator, dev)
        log_ratio = _uniform(b, math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]), generator, dev)
        ratio = torch.exp(log_ratio)
        sx = torch.sqrt(area * ratio).clamp(max=1.0)
        sy = torch.sqrt(area / ratio).clamp(max=1.0)
        tx = _uniform(b, -1.0, 1.0, generator, dev) * (1 - sx)
        ty = _uniform(b, -1.0, 1.0, generator, dev) * (1 - sy)
    else:
        sx = torch.full((b,), min(out_size / w, 1.0), device=dev)
        sy = torch.full((b,), min(out_size / h, 1.0), device=dev)
        tx = ty = torch.zeros(b, device=dev)
    mat = torch.zeros(b, 2, 2, device=dev)
    mat[:, 0, 0], mat[:, 1, 1] = 1.0, 1.0
    if config.flips:
        signs = torch.randint(0, 2, (b, 2), generator=generator, device=dev).float() * 2 - 1
        mat = mat * signs[:, None, :]
    if config.rot90:
        k = torch.randint(0, 4, (b,), generator=generator, device=dev)
        rot = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, -1.0], [1.0, 0.0]],
                            [[-1.0, 0.0], [0.0, -1.0]], [[0.0, 1.0], [-1.0, 0.0]]], device=dev)[k]
        mat = rot @ mat
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, :, :2] = torch.diag_embed(torch.stack([sx, sy], 1)) @ mat
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta, [b, x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def brightness_contrast(x: torch.Tensor, brightness: float, contrast: float, generator: torch.Generator):
    """Per crop and per channel: ``(x - mean) * c + mean + b``."""
    b, c = x.shape[:2]
    mean = x.mean(dim=(2, 3), keepdim=True)
    factor = _uniform((b, c, 1, 1), 1 - contrast, 1 + contrast, generator, x.device)
    shift = _uniform((b, c, 1, 1), -brightness, brightness, generator, x.device)
    return (x - mean) * factor + mean + shift


def gaussian_blur(x: torch.Tensor, prob: float, sigma: tuple[float, float], generator: torch.Generator):
    """Blur each crop with probability ``prob`` (same sigma for all its channels), separably."""
    b, c, h, w = x.shape
    dev = x.device
    s = _uniform(b, *sigma, generator, dev)
    apply = torch.rand(b, generator=generator, device=dev) < prob
    radius = max(1, math.ceil(2 * sigma[1]))
    t = torch.arange(-radius, radius + 1, device=dev, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t[None, :] / s[:, None].to(x.dtype)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (t == 0).to(x.dtype).expand(b, -1)
    kernel = torch.where(apply[:, None], kernel, delta)
    kernel = kernel.repeat_interleave(c, dim=0)  # (B*C, K)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator):
    """Add noise with a per-crop std drawn uniformly in ``[0, std]``."""
    level = _uniform((x.shape[0], 1, 1, 1), 0.0, std, generator, x.device)
    return x + level * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def channel_dropout(x: torch.Tensor, prob: float, generator: torch.Generator):
    """Zero each channel with probability ``prob``; a crop whose channels all drop keeps them all."""
    b, c = x.shape[:2]
    drop = torch.rand((b, c), generator=generator, device=x.device) < prob
    drop &= ~drop.all(dim=1, keepdim=True)
    return x * (~drop)[:, :, None, None].to(x.dtype)


def augment(x: torch.Tensor, config: AugmentConfig, out_size: int, generator: torch.Generator) -> torch.Tensor:
    """Apply the augmentations of ``config`` to a batch ``(B, C, S, S)``; returns ``(B, C, out_size, out_size)``."""
    x = geometric(x, config, out_size, generator)
    if config.brightness or config.contrast:
        x = brightness_contrast(x, config.brightness, config.contrast, generator)
    if config.blur_prob > 0:
        x = gaussian_blur(x, config.blur_prob, config.blur_sigma, generator)
    if config.noise_std > 0:
        x = gaussian_noise(x, config.noise_std, generator)
    if config.channel_dropout > 0:
        x = channel_dropout(x, config.channel_dropout, generator)
    return x


def center_crop(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """The centre ``out_size`` square of ``(B, C, S, S)``; bilinear resize when ``S < out_size``."""
    s = x.shape[-1]
    if s < out_size:
        return F.interpolate(x, size=(out_size, out_size), mode="bilinear", align_corners=False)
    top = (s - out_size) // 2
    return x[..., top:top + out_size, top:top + out_size]
