"""Embedding inference: crops of a cells.zarr -> ``obsm["X_<method>"]`` of an AnnData, aligned by cell_id."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import __version__
from .augment import AugmentConfig, view
from .checkpoint import check_channels, load_model
from ..io.cells import obs_adata
from .data import CellChunks, model_scale
from .inference import embed_store, store_embedding


# What the embedding of a ResNet model is: "last" = the global average pool of its last stage (what its training
# objective saw); "stages" = the global average pools of every stage, concatenated (fine to coarse, multi-scale).
EMBED_POOLS = ("last", "stages")


def embedding_function(model, config: dict, pool: str | None = None):
    """The function that maps a view batch ``(B, C, S, S)`` to embeddings ``(B, D)``: ``model.embed`` for
    ``pool="last"``, the encoder's `ResNetEncoder.stage_features` for ``"stages"``. ``pool`` None = the model's
    config ``embed_pool`` (``"last"`` in folders saved before the option)."""
    from .encoders import ResNetEncoder

    pool = pool or config.get("embed_pool") or "last"
    if pool not in EMBED_POOLS:
        raise ValueError(f"unknown embedding pool {pool!r}; choose one of {', '.join(EMBED_POOLS)}")
    if pool == "last":
        return model.embed
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, ResNetEncoder):
        raise ValueError(f"pool={pool!r} needs a ResNet encoder; a {config.get('method')} model has none")
    return encoder.stage_features


class ModelEmbedder:
    """Raw crops ``(B, C, S, S)`` float32 -> ``(B, D)`` embeddings with a trained model folder
    (its saved per-channel normalization, centre-cropped to its input size).

    ``channels``: the crops' channel names, checked against the model's (`ChannelMismatchError`).
    ``pool``: see `embedding_function` (None = the model's ``embed_pool``).
    A model trained with ``norm_by`` (each plate brought to one intensity level) takes the crops' factors as
    ``scale`` ``(B, C)`` (`store_scale`); without them, crops are taken as they are, at the model's level.
    """

    def __init__(self, model_dir, channels: Sequence[str], *, device="cpu", pool: str | None = None):
        self.model, self.config = load_model(model_dir, device=device)
        check_channels(self.config["channels"], channels, where="the crops")
        self.device = torch.device(device)
        self.mean = torch.tensor(self.config["norm_mean"], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(self.config["norm_std"], dtype=torch.float32).view(1, -1, 1, 1)
        self.name = self.config["method"]
        self.view = AugmentConfig.from_dict(self.config.get("augment"))
        self.needs_masks = self.view.needs_masks  # robustness passes masks when this is True
        self.embed_fn = embedding_function(self.model, self.config, pool)

    def store_scale(self, cells) -> np.ndarray | None:
        """The factors ``(N, C)`` float32 that bring the crops of ``cells`` to the model's level (`group_scale`);
        None for a model trained without ``norm_by``."""
        return model_scale(cells, self.config)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, masks: torch.Tensor | None = None, scale: torch.Tensor | None = None
                 ) -> np.ndarray:
        if scale is not None:
            x = x * scale[:, :, None, None]
        x = view((x - self.mean) / self.std, self.view, self.config["input_size"], masks=masks,
                 offset=(self.mean / self.std).flatten())
        return self.embed_fn(x.to(self.device)).float().cpu().numpy()


def embed_cells(cells, model_dir, *, batch_size: int = 256, num_workers: int = 0, device=None,
                progress=None, pool: str | None = None) -> tuple[np.ndarray, dict]:
    """Embed every crop of a complete cells.zarr with the model in ``model_dir``.

    Crops are normalized with the model's saved per-channel statistics and cut to the model's view
    (`cellkit.models.augment.view`: centred, optionally masked, ``view_size`` resampled to its input size). Raises `ChannelMismatchError` when the store's channels (names, order)
    differ from the model's. ``pool``: `EMBED_POOLS` (None = the model's ``embed_pool``; see `embedding_function`).

    Returns
    -------
    embeddings : float32 (N, D), in store order.
    config : the model's config.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config = load_model(model_dir, device=device)
    aug = AugmentConfig.from_dict(config.get("augment"))
    offset = np.asarray(config["norm_mean"]) / np.asarray(config["norm_std"])
    check_channels(config["channels"], CellChunks(cells).channels, where=f"the cells store {cells}")
    scale = model_scale(cells, config)  # each plate brought to the level the model was trained at (norm_by)
    data = CellChunks(cells, mean=config["norm_mean"], std=config["norm_std"], masks=aug.needs_masks, scale=scale)
    amp = config.get("amp", False) and device.type == "cuda"
    embed_fn = embedding_function(model, config, pool)
    config = {**config, "embed_pool": pool or config.get("embed_pool") or "last"}

    def embed_batch(x, masks):
        x = view(x.to(device), aug, config["input_size"], masks=None if masks is None else masks.to(device),
                 offset=offset)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return embed_fn(x).float().cpu().numpy()

    return embed_store(data, embed_batch, batch_size=batch_size, num_workers=num_workers, progress=progress), config


def recorded_embedder(adata, use_rep: str, *, model=None, device="cpu"):
    """Rebuild the embedder that wrote ``adata.obsm[use_rep]``, to embed new crops the same way.

    Reads ``adata.uns["cellkit"]["embeddings"][use_rep]`` (written by `embed` and `embed_mae`).
    ``model``: a model folder (or ``"hf:NAME_OR_PATH"``) to use instead of the recorded one, for
    example after moving it; a trained model's weights must be the recorded ones (sha256).

    Returns
    -------
    embedder : callable, raw crops (B, C, S, S) float32 tensor -> (B, D) float32 array.
    channels : the C channel names the crops must have, in this order.
    """
    from .checkpoint import read_config
    from .hf import PREFIX, MAEEmbedder, is_hf

    record = dict(adata.uns.get("cellkit", {}).get("embeddings", {}).get(use_rep, {}))
    from_hf = "model_dir" not in record and "model" in record
    if from_hf or (model is not None and is_hf(model)):
        if not from_hf:
            raise KeyError(f"{use_rep} has no ViT-MAE record (channel mode, pooling, normalization): "
                           "embed the cells with `cellkit embed --model hf:...` first")
        picked = [str(c) for c in record["channels"]]  # h5ad gives arrays back
        store = [str(c) for c in record.get("store_channels", picked)]
        rows = [store.index(c) for c in picked]
        mae = MAEEmbedder(str(model or PREFIX + record["model"]), picked, record["norm_mean"],
                          record["norm_std"], channel_mode=record["channel_mode"], pool=record["pool"], device=device)
        return (lambda x: mae(x[:, rows])), store
    source = model or record.get("model_dir")
    if source is None:
        raise KeyError(f"adata.uns['cellkit']['embeddings'] has no record of {use_rep!r}; "
                       "give the model folder that made it")
    if not Path(source).is_dir():
        raise FileNotFoundError(f"the model folder that made {use_rep}, {source}, is not there (was the run folder "
                                "moved?): pass model=<its new place>; its weights are checked against the record")
    embedder = ModelEmbedder(source, read_config(source)["channels"], device=device, pool=record.get("pool"))
    recorded = record.get("weights_sha256")
    if recorded and embedder.config.get("weights_sha256") != recorded:
        raise ValueError(f"the model in {source} is not the one that made {use_rep}: its weights sha256 "
                         f"{embedder.config.get('weights_sha256', '?')[:12]} differs from the recorded {recorded[:12]}")
    return embedder, list(embedder.config["channels"])


def embed(adata, cells, model_dir, *, key_added: str | None = None, batch_size: int = 256, num_workers: int = 0,
          device=None, progress=None, pool: str | None = None) -> None:
    """Embed the cells of ``adata`` with a trained model and store the result in ``adata``.

    Reads ``adata.obs_names`` (cell ids); every one must be a ``cell_id`` of the store.
    Writes ``adata.obsm[key_added]`` float32 (n_obs, D) (default key ``X_<method>``: ``X_simclr``,
    ``X_byol``, ``X_ae``, ``X_pixel_pca``, ``X_random``) and ``adata.uns["cellkit"]["embeddings"][key]``
    (model folder, method, weights sha256, channels, normalization, pool, versions). ``pool``: see `embed_cells`.
    """
    from .options import EMBEDDING_KEYS

    z, config = embed_cells(cells, model_dir, batch_size=batch_size, num_workers=num_workers, device=device,
                            progress=progress, pool=pool)
    store_embedding(adata, cells, z, key_added or EMBEDDING_KEYS[config["method"]], {
        "model_dir": str(Path(model_dir).resolve()), "method": config["method"], "cells": str(cells),
        "weights_sha256": config.get("weights_sha256", ""), "channels": list(config["channels"]),
        "input_size": config["input_size"], "norm_mean": config["norm_mean"], "norm_std": config["norm_std"],
        "pool": config["embed_pool"], "norm_by": list(config.get("norm_by") or []),
        "epochs": config.get("epochs_done", 0), "seed": config["seed"], "cellkit_version": __version__,
        "torch_version": str(torch.__version__)})


def embed_h5ad(cells, model_dir, h5ad, *, key_added: str | None = None, hf_options: dict | None = None,
               **options) -> Path:
    """`embed` into an h5ad file, created from the store's obs when it does not exist; written atomically.

    ``model_dir`` ``"hf:NAME_OR_PATH"``: a Hugging Face ViT-MAE (`cellkit.models.hf.embed_mae`, key
    ``X_mae`` by default, ``hf_options`` = its ``channel_mode``, ``pool``, ``use_channels``).
    """
    import anndata as ad

    from .._atomic import atomic_path
    from .hf import embed_mae, is_hf

    h5ad = Path(h5ad)
    adata = ad.read_h5ad(h5ad) if h5ad.exists() else obs_adata(cells)
    if is_hf(model_dir):
        options.pop("num_workers", None)
        embed_mae(adata, cells, str(model_dir), key_added=key_added or "X_mae", **(hf_options or {}), **options)
    else:
        embed(adata, cells, model_dir, key_added=key_added, **options)
    with atomic_path(h5ad) as tmp:
        adata.write_h5ad(tmp)
    return h5ad
