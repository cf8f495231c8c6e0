"""Batched microscopy augmentations, run on the training device (kernels from kornia).

All randomness comes from one ``torch.Generator`` passed in (never torch's global RNG, which
kornia's random ``augmentation`` modules draw from): the parameters are drawn here, and
kornia's deterministic functional kernels apply them (`blur`). A seeded generator therefore
gives the same views every run and for any number of DataLoader workers (batches are
assembled in the main process). Inputs are normalized float crops ``(B, C, S, S)``, with
optional masks ``(B, 2, S, S)`` (nucleus, cell) of the store; outputs are
``(B, C, out_size, out_size)``.

Views (`view`, the same in training and embedding): the crop is centred on the nucleus (as
stored) or on the cell (``center="cell"``), its background optionally masked with the cell
mask, and a ``view_size`` square of it is resampled to ``out_size``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch.nn import functional as F

CENTERS = ("nucleus", "cell")


@dataclass
class AugmentConfig:
    """Which augmentations run, and how strongly. Set a strength to 0 (or a flag to False) to turn one off.

    crop_scale : (min, max) area fraction kept by the random resized crop; ``None`` = no scale change.
    crop_ratio : (min, max) aspect ratio of the random resized crop.
    flips, rot90 : random horizontal/vertical flips and multiples of 90-degree rotation.
    rotation : random rotation by any angle (orientation is nuisance); replaces ``rot90``.
    translate : random shift of the view, up to this fraction of its side (position is nuisance).
    brightness : per-channel additive shift, uniform in +-brightness (normalized units).
    contrast : per-channel contrast factor, uniform in 1 +- contrast (about the channel mean).
    intensity_scale : one factor ``exp(U(-v, v))`` on the raw intensities of every channel of a crop
        (plate-level staining); keeps the ratios between channels.
    blur_prob, blur_sigma : probability of a Gaussian blur (focus) and its (min, max) sigma in pixels.
    noise_std : Gaussian noise, std uniform in [0, noise_std] per crop.
    channel_dropout : probability of zeroing each channel (never all channels of a crop).
    view_size : side (px of the stored crop) resampled to the model's input; ``None`` = the input size
        (no resampling); ``"auto"`` = from the measured cell size, so that the whole cell fits.
    center : ``"nucleus"`` (crops are stored centred on the nucleus) or ``"cell"`` (the cell mask's centroid).
    mask_background : pixels outside the cell's mask set to raw 0 (neighbours and background removed).
    """

    crop_scale: tuple[float, float] | None = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    flips: bool = True
    rot90: bool = True
    rotation: bool = False
    translate: float = 0.0
    brightness: float = 0.2
    contrast: float = 0.2
    intensity_scale: float = 0.0
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_std: float = 0.1
    channel_dropout: float = 0.0
    view_size: int | str | None = None
    center: str = "nucleus"
    mask_background: bool = False

    @classmethod
    def from_dict(cls, values: dict | None) -> "AugmentConfig":
        values = dict(values or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown augmentation option(s): {sorted(unknown)}")
        for key in ("crop_scale", "crop_ratio", "blur_sigma"):
            if values.get(key) is not None:
                values[key] = tuple(float(v) for v in values[key])
        config = cls(**values)
        if config.center not in CENTERS:
            raise ValueError(f"center must be one of {CENTERS}, got {config.center!r}")
        if not (config.view_size is None or config.view_size == "auto" or int(config.view_size) >= 4):
            raise ValueError(f"view_size must be None, 'auto' or a size in pixels >= 4, got {config.view_size!r}")
        return config

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def needs_masks(self) -> bool:
        return self.mask_background or self.center == "cell"


def _uniform(shape, low, high, generator, device):
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def _view_scale(config: AugmentConfig, out_size: int, width: int) -> float:
    if config.view_size == "auto":
        raise ValueError("view_size 'auto' must be resolved from the store first (train does it)")
    size = out_size if config.view_size is None else int(config.view_size)
    return min(size / width, 1.0)


def _centre_offset(masks: torch.Tensor | None, config: AugmentConfig, b: int, width: int, dev) -> torch.Tensor:
    """(B, 2) shift (x, y) in normalized coordinates from the crop centre to the view centre."""
    if config.center != "cell":
        return torch.zeros(b, 2, device=dev)
    if masks is None:
        raise ValueError("center='cell' needs the cells' masks")
    cell = masks[:, 1].float()
    coords = (torch.arange(width, device=dev, dtype=torch.float32) + 0.5) * 2 / width - 1
    area = cell.sum((1, 2)).clamp_min(1)
    cx = (cell.sum(1) * coords).sum(1) / area
    cy = (cell.sum(2) * coords).sum(1) / area
    return torch.stack([cx, cy], 1) * (cell.sum((1, 2)) > 0)[:, None]


def _mask_background(x: torch.Tensor, masks: torch.Tensor | None, config: AugmentConfig, offset) -> torch.Tensor:
    if not config.mask_background:
        return x
    if masks is None:
        raise ValueError("mask_background needs the cells' masks")
    fill = -_channel_offset(offset, x)  # raw 0 in normalized units
    return torch.where(masks[:, 1:2].bool(), x, fill)


def _channel_offset(offset, x: torch.Tensor) -> torch.Tensor:
    """``mean / std`` per channel as (1, C, 1, 1): raw = std * (x + offset)."""
    if offset is None:
        return torch.zeros(1, x.shape[1], 1, 1, device=x.device, dtype=x.dtype)
    return torch.as_tensor(offset, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)


def geometric(x: torch.Tensor, config: AugmentConfig, out_size: int, generator: torch.Generator | None,
              masks: torch.Tensor | None = None) -> torch.Tensor:
    """The view (centre, ``view_size``) with random resized crop, shift, flips and rotations, in one
    bilinear resampling per crop. ``generator=None``: the plain view, no randomness.

    Without a random crop or shift, the centre ``out_size`` square is taken (exactly, when the size
    difference is even and no resize is needed).
    """
    b, _, h, w = x.shape
    dev = x.device
    base = _view_scale(config, out_size, w)
    centre = _centre_offset(masks, config, b, w, dev)
    tx, ty = centre[:, 0], centre[:, 1]
    sx = sy = torch.full((b,), base, device=dev)
    mat = torch.eye(2, device=dev).repeat(b, 1, 1)
    if generator is not None:
        if config.crop_scale is not None:
            area = _uniform(b, *config.crop_scale, generator, dev)
            log_ratio = _uniform(b, math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]), generator, dev)
            ratio = torch.exp(log_ratio)
            sx = (base * torch.sqrt(area * ratio)).clamp(max=1.0)
            sy = (base * torch.sqrt(area / ratio)).clamp(max=1.0)
            tx = tx + _uniform(b, -1.0, 1.0, generator, dev) * (base - sx).clamp_min(0)
            ty = ty + _uniform(b, -1.0, 1.0, generator, dev) * (base - sy).clamp_min(0)
        if config.translate:
            shift = _uniform((b, 2), -1.0, 1.0, generator, dev) * 2 * base * config.translate
            tx, ty = tx + shift[:, 0], ty + shift[:, 1]
        if config.flips:
            signs = torch.randint(0, 2, (b, 2), generator=generator, device=dev).float() * 2 - 1
            mat = mat * signs[:, None, :]
        if config.rotation:
            a = _uniform(b, 0.0, 2 * math.pi, generator, dev)
            rot = torch.stack([torch.cos(a), -torch.sin(a), torch.sin(a), torch.cos(a)], 1).view(b, 2, 2)
            mat = rot @ mat
        elif config.rot90:
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


def intensity_scale(x: torch.Tensor, strength: float, generator: torch.Generator, offset=None):
    """Raw intensities of a crop times one factor ``exp(U(-strength, strength))`` for all its channels.

    On normalized crops ``x = raw / std - offset``: ``a * raw`` is ``a * x + (a - 1) * offset``.
    """
    a = torch.exp(_uniform((x.shape[0], 1, 1, 1), -strength, strength, generator, x.device)).to(x.dtype)
    return a * x + (a - 1) * _channel_offset(offset, x)


def blur(x: torch.Tensor, sigma) -> torch.Tensor:
    """Gaussian blur (kornia, separable, reflect padding) of ``(B, C, H, W)``: one sigma (px) for all
    crops, or a ``(B,)`` tensor of them; sigma 0 leaves a crop unchanged. The one blur of cellkit:
    training augmentation and the robustness perturbation both call it."""
    from kornia.filters import gaussian_blur2d

    b, _, h, w = x.shape
    s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(b)
    top = float(s.max()) if b else 0.0
    if top <= 0:
        return x.clone()
    radius = min(max(1, math.ceil(3 * top)), h - 1, w - 1)
    s = s.clamp_min(1e-3)  # a delta kernel: exp(-0.5 / 1e-6) is 0 in float32
    return gaussian_blur2d(x, 2 * radius + 1, torch.stack([s, s], 1), border_type="reflect")


def gaussian_blur(x: torch.Tensor, prob: float, sigma: tuple[float, float], generator: torch.Generator):
    """Blur each crop with probability ``prob`` (same sigma for all its channels)."""
    b = x.shape[0]
    s = _uniform(b, *sigma, generator, x.device)
    apply = torch.rand(b, generator=generator, device=x.device) < prob
    return blur(x, torch.where(apply, s, torch.zeros_like(s)))


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


def augment(x: torch.Tensor, config: AugmentConfig, out_size: int, generator: torch.Generator, *,
            masks: torch.Tensor | None = None, offset=None) -> torch.Tensor:
    """Apply the augmentations of ``config`` to a batch ``(B, C, S, S)``; returns ``(B, C, out_size, out_size)``.

    ``masks`` (B, 2, S, S): needed for ``mask_background`` and ``center="cell"``. ``offset``: the
    normalization's ``mean / std`` per channel (C,), so that intensity scaling and masking act on raw values.
    """
    x = _mask_background(x, masks, config, offset)
    x = geometric(x, config, out_size, generator, masks)
    if config.intensity_scale:
        x = intensity_scale(x, config.intensity_scale, generator, offset)
    if config.brightness or config.contrast:
        x = brightness_contrast(x, config.brightness, config.contrast, generator)
    if config.blur_prob > 0:
        x = gaussian_blur(x, config.blur_prob, config.blur_sigma, generator)
    if config.noise_std > 0:
        x = gaussian_noise(x, config.noise_std, generator)
    if config.channel_dropout > 0:
        x = channel_dropout(x, config.channel_dropout, generator)
    return x


def view(x: torch.Tensor, config: AugmentConfig, out_size: int, *, masks: torch.Tensor | None = None,
         offset=None) -> torch.Tensor:
    """The deterministic view a model embeds: masking, centring and ``view_size`` of ``config``, no randomness.

    With the default options (``view_size=None``, nucleus centre, no masking) it is `center_crop`.
    """
    if config.view_size is None and not config.needs_masks:
        return center_crop(x, out_size)
    return geometric(_mask_background(x, masks, config, offset), config, out_size, None, masks)


def center_crop(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """The centre ``out_size`` square of ``(B, C, S, S)``; bilinear resize when ``S < out_size``."""
    s = x.shape[-1]
    if s < out_size:
        return F.interpolate(x, size=(out_size, out_size), mode="bilinear", align_corners=False)
    top = (s - out_size) // 2
    return x[..., top:top + out_size, top:top + out_size]
