"""Embeddings from a pretrained Hugging Face ViT-MAE (``transformers``, the optional ``hf`` extra).

The model is loaded from a local folder or the local Hugging Face cache only (never the network).
Masking is off at inference (``mask_ratio = 0``, patches kept in their order).

Channels -> model input (``channel_mode``):

- ``"rgb"``: the store's first three channels (or the three named in ``channels``) are the
  model's R, G, B (for BBBC021: DNA, Tubulin, Actin). Needs a 3-channel model.
- ``"per-channel"``: every channel is embedded on its own, as a grey image repeated over the
  model's input channels; the per-channel embeddings are concatenated (dimension C x hidden).
  Works with any channel count and any model.

Each channel is first z-scored with the store's per-channel mean and SD (`channel_stats`, pixels
of up to 4,096 cells), which puts it on the scale of ImageNet-normalized pixels, then resized
(bilinear) to the model's ``image_size``. Pooling: ``"mean"`` of the patch tokens or the
``"cls"`` token of the last hidden state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

PREFIX = "hf:"
CHANNEL_MODES = ("rgb", "per-channel")
POOLS = ("mean", "cls")


class MissingModelError(FileNotFoundError):
    """A Hugging Face model that is neither a local folder nor in the local cache."""


def is_hf(model) -> bool:
    """True for a model given as ``"hf:NAME_OR_PATH"``."""
    return str(model).startswith(PREFIX)


def load_mae(name_or_path: str, *, device="cpu"):
    """A ViT-MAE encoder (``transformers.ViTMAEModel``) in eval mode with masking off.

    ``name_or_path``: a folder with ``config.json`` + weights, or a Hub name already in the local
    cache (``hf:`` prefix allowed). Raises `MissingModelError` saying how to provide it, and
    ImportError when ``transformers`` is not installed.
    """
    try:
        from transformers import ViTMAEModel
    except ImportError as err:
        raise ImportError("Hugging Face models need transformers: pip install 'cellkit[hf]'") from err
    name = str(name_or_path).removeprefix(PREFIX)
    try:
        model = ViTMAEModel.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as err:
        where = "folder" if Path(name).exists() or name.startswith((".", "/", "~")) else "model name"
        raise MissingModelError(
            f"cannot load the ViT-MAE {where} {name!r} without the network ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}). Give a local folder holding config.json and model.safetensors "
            f"(e.g. `huggingface-cli download {name if where == 'model name' else 'facebook/vit-mae-base'} "
            "--local-dir DIR` on a machine with internet, then copy DIR here) or put the model in the "
            "Hugging Face cache (HF_HOME).") from None
    if getattr(model.config, "model_type", "") != "vit_mae":
        raise ValueError(f"{name} is a {model.config.model_type!r} model, not a ViT-MAE (vit_mae)")
    model.config.mask_ratio = 0.0
    return model.to(device).eval()


class MAEEmbedder:
    """Raw crops ``(B, C, S, S)`` float32 -> ``(B, D)`` embeddings with a ViT-MAE (see the module doc).

    ``mean``, ``std``: per-channel pixel statistics of the store (C,); ``channels``: the store's
    channel names; ``use_channels``: for ``"rgb"``, the three names fed as R, G, B.
    """

    def __init__(self, model_name: str, channels: Sequence[str], mean, std, *, channel_mode: str = "rgb",
                 pool: str = "mean", use_channels: Sequence[str] | None = None, device="cpu"):
        if channel_mode not in CHANNEL_MODES:
            raise ValueError(f"channel_mode must be one of {CHANNEL_MODES}, got {channel_mode!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.model = load_mae(model_name, device=device)
        self.device = torch.device(device)
        cfg = self.model.config
        self.size, self.in_channels = int(cfg.image_size), int(cfg.num_channels)
        channels = list(channels)
        if channel_mode == "rgb":
            picked = list(use_channels) if use_channels else channels[:3]
            unknown = [c for c in picked if c not in channels]
            if unknown:
                raise ValueError(f"channels {unknown} are not in the store's channels {channels}")
            if len(picked) != 3 or self.in_channels != 3:
                raise ValueError(f"channel_mode 'rgb' needs 3 channels and a 3-channel model; got {picked} and a "
                                 f"{self.in_channels}-channel model (use channel_mode='per-channel')")
            self.rows = [channels.index(c) for c in picked]
        else:
            self.rows = list(range(len(channels)))
        self.mean = torch.tensor(np.asarray(mean, np.float32)[self.rows]).view(1, -1, 1, 1)
        self.std = torch.tensor(np.asarray(std, np.float32)[self.rows]).view(1, -1, 1, 1)
        self.channel_mode, self.pool = channel_mode, pool
        self.name = "mae"
        self.info = {"model": str(model_name).removeprefix(PREFIX), "channel_mode": channel_mode, "pool": pool,
                     "channels": [channels[i] for i in self.rows], "image_size": self.size,
                     "hidden_size": int(cfg.hidden_size), "norm_mean": self.mean.flatten().tolist(),
                     "norm_std": self.std.flatten().tolist()}

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        n_patches = (self.size // self.model.config.patch_size) ** 2
        noise = torch.arange(n_patches, dtype=torch.float32).expand(len(x), -1)  # ascending: patches kept in order
        hidden = self.model(pixel_values=x.to(self.device), noise=noise.to(self.device)).last_hidden_state
        return hidden[:, 0] if self.pool == "cls" else hidden[:, 1:].mean(dim=1)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> np.ndarray:
        x = (x[:, self.rows].float() - self.mean) / self.std
        if self.channel_mode == "rgb":
            z = self._encode(x)
        else:
            z = torch.cat([self._encode(x[:, c:c + 1].expand(-1, self.in_channels, -1, -1))
                           for c in range(x.shape[1])], dim=1)
        return z.float().cpu().numpy()


def embed_mae(adata, cells, model_name: str, *, channel_mode: str = "rgb", pool: str = "mean",
              use_channels: Sequence[str] | None = None, key_added: str = "X_mae", batch_size: int = 64,
              device=None, progress=None) -> None:
    """Embed the cells of ``adata`` (obs names = cell ids of the store) with a ViT-MAE.

    Writes ``adata.obsm[key_added]`` float32 (n_obs, D) and
    ``adata.uns["cellkit"]["embeddings"][key_added]`` (model, channel mapping, pooling, normalization, versions).
    """
    import transformers

    from .. import __version__
    from ..io.cells import open_cells
    from .data import CellChunks, channel_stats
    from .inference import embed_store, store_embedding

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    root = open_cells(cells)
    mean, std = channel_stats(cells)
    embedder = MAEEmbedder(model_name, list(root.attrs["channels"]), mean, std, channel_mode=channel_mode, pool=pool,
                           use_channels=use_channels, device=device)
    z = embed_store(CellChunks(cells), lambda x, masks: embedder(x), batch_size=batch_size, progress=progress)
    store_embedding(adata, cells, z, key_added, {
        **embedder.info, "method": "mae", "cells": str(cells), "store_channels": list(root.attrs["channels"]),
        "cellkit_version": __version__, "torch_version": str(torch.__version__),
        "transformers_version": transformers.__version__})
