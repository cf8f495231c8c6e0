"""A small masked autoencoder (ViT-MAE, from ``transformers``) trained on cell crops: ``cellkit train --method mae``.

The crops (normalized, ``input_size`` square) are cut into ``patch_size`` patches; ``mask_ratio``
of them are hidden and the decoder reconstructs their pixels (normalized per patch with ``mae_norm_pix``). The
embedding is the mean of the encoder's patch tokens with masking off. The masks come from a
generator seeded by (seed, step), whose step counter is saved with the weights, so a resumed
run draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import nn


def mae_config(in_channels: int, config: dict):
    try:
        from transformers import ViTMAEConfig
    except ImportError as err:
        raise ImportError("--method mae needs transformers: pip install 'cellkit[hf]'") from err
    size, patch = int(config["input_size"]), int(config["patch_size"])
    if size % patch:
        raise ValueError(f"input_size {size} is not divisible by patch_size {patch}")
    dim, heads = int(config["mae_dim"]), int(config["mae_heads"])
    if dim % heads:
        raise ValueError(f"mae_dim {dim} is not divisible by mae_heads {heads}")
    return ViTMAEConfig(image_size=size, patch_size=patch, num_channels=in_channels, hidden_size=dim,
                        num_hidden_layers=int(config["mae_depth"]), num_attention_heads=heads,
                        intermediate_size=4 * dim, decoder_hidden_size=max(heads, dim // 2),
                        decoder_num_hidden_layers=int(config["mae_decoder_depth"]),
                        decoder_num_attention_heads=heads, decoder_intermediate_size=2 * dim,
                        mask_ratio=float(config["mask_ratio"]),
                        norm_pix_loss=bool(config.get("mae_norm_pix", True)))  # older models: True


class MaskedAutoencoder(nn.Module):
    """``loss(x, _)``: masked-patch reconstruction error; ``embed(x)``: mean patch token, no masking."""

    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        from transformers import ViTMAEForPreTraining

        self.net = ViTMAEForPreTraining(mae_config(in_channels, config))
        self.seed = int(config.get("seed", 0))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.n_patches = (int(config["input_size"]) // int(config["patch_size"])) ** 2

    def loss(self, x, _=None):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps))
        noise = torch.rand(len(x), self.n_patches, generator=gen).to(x.device)
        self.steps += 1
        return self.net(pixel_values=x, noise=noise).loss

    def embed(self, x):
        vit = self.net.vit
        ratio = vit.config.mask_ratio
        vit.config.mask_ratio = 0.0
        try:
            noise = torch.arange(self.n_patches, dtype=torch.float32, device=x.device).expand(len(x), -1)
            hidden = vit(pixel_values=x, noise=noise).last_hidden_state
        finally:
            vit.config.mask_ratio = ratio
        return hidden[:, 1:].mean(dim=1)
