"""Whole-image embeddings: fields (or tiles of fields) of a plate index -> an AnnData of images.

Field size vs model input (``policy``):

- ``"resize"``: each field (C, H, W) is resized (antialiased bilinear) to ``size x size``, the
  aspect ratio not kept, as Hugging Face's ViT image processor does: one input per field.
- ``"tile"``: each field is first scaled by ``scale`` (antialiased), then cut into ``size x size``
  tiles on a regular grid that covers it (``ceil(H' / size)`` x ``ceil(W' / size)`` tiles, evenly
  spaced, overlapping where the size does not divide the field); a field's embedding is the mean
  of its tiles' embeddings. Tiles keep the pixel scale, so a model trained on tiles
  (`write_tiles` then ``cellkit train``) sees the same scale at embedding time.

The inputs are written as a cells.zarr (`write_tiles`, one row per tile, uint16, masks all set,
obs = the index metadata + ``tile``, ``tile_y``, ``tile_x``), so training (``cellkit train``),
embedding (`cellkit.models.embed.embed_cells`, `cellkit.models.hf.embed_mae`) and robustness
(``ck.tl.robustness(..., groupby="field_id")``) reuse the loops written for cell crops.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

POLICIES = ("resize", "tile")


def _resize(x: np.ndarray, shape) -> np.ndarray:
    t = torch.from_numpy(np.asarray(x, np.float32))[None]
    return F.interpolate(t, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False,
                         antialias=True)[0].numpy()


def _starts(length: int, size: int) -> list[int]:
    n = max(1, -(-length // size))
    return sorted({int(round(s)) for s in np.linspace(0, max(length - size, 0), n)})


def field_tiles(images: np.ndarray, *, size: int, policy: str = "tile", scale: float = 1.0):
    """Model inputs of one field (C, H, W): ``(T, C, size, size)`` float32 and their (y, x) positions
    in the scaled field (T, 2) int. See the module doc for the policies."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"a field is (C, H, W), got shape {images.shape}")
    if policy == "resize":
        return _resize(images, (size, size))[None], np.zeros((1, 2), int)
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    h, w = images.shape[1:]
    hs, ws = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
    field = _resize(images, (hs, ws)) if (hs, ws) != (h, w) else images.astype(np.float32)
    pos = [(y, x) for y in _starts(hs, size) for x in _starts(ws, size)]
    return np.stack([field[:, y:y + size, x:x + size] for y, x in pos]), np.asarray(pos, int)


def write_tiles(index: pd.DataFrame, out: str | os.PathLike, *, size: int = 64, policy: str = "tile",
                scale: float = 1.0, channels: Sequence[str] | None = None, channel_names: Sequence[str] | None = None,
                overwrite: bool = False, progress=None) -> Path:
    """Write the model inputs of every field of a plate index as a complete cells.zarr.

    ``channels``: index channels used (default all, in index order); ``channel_names``: the names
    the store gives them (e.g. ``["image"]`` so that one grey model serves any stain).
    Pixels are rounded to uint16. obs: index metadata, ``field_id``, ``tile``, ``tile_y``, ``tile_x``
    (in the scaled field) and ``cell_id`` = ``<field_id>/t<tile>``. Attrs record the policy.
    """
    from ..io.cells import write_cells
    from ..io.images import read_field
    from ..io.plate_index import METADATA_COLUMNS, channels_of

    channels = list(channels or channels_of(index))
    names = list(channel_names or channels)
    if len(names) != len(channels):
        raise ValueError(f"{len(names)} channel names for {len(channels)} channels")
    if len(index) == 0:
        raise ValueError("the plate index has no fields")
    tiles, rows = [], []
    for done, (_, row) in enumerate(index.iterrows(), 1):
        x, pos = field_tiles(read_field(row, channels), size=size, policy=policy, scale=scale)
        tiles.append(np.clip(np.rint(x), 0, 65535).astype(np.uint16))
        meta = {c: row[c] for c in METADATA_COLUMNS if c in row}
        rows += [{**meta, "cell_id": f"{row['field_id']}/t{t}", "tile": t, "tile_y": int(y), "tile_x": int(x_)}
                 for t, (y, x_) in enumerate(pos)]
        if progress:
            progress(done, len(index))
    images = np.concatenate(tiles)
    masks = np.ones((len(images), 2, size, size), bool)
    attrs = {"source": "whole images", "policy": policy, "scale": float(scale), "tile_size": int(size),
             "index_channels": channels, "masks_available": False}
    return write_cells(out, images, masks, pd.DataFrame(rows), channels=names, attrs=attrs, overwrite=overwrite)


def mean_by_field(z: np.ndarray, field_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Mean of the rows of ``z`` (N, D) per field, fields in order of first appearance: ((F, D), ids)."""
    codes, uniques = pd.factorize(pd.Index([str(f) for f in field_ids]))
    out = np.zeros((len(uniques), z.shape[1]), np.float64)
    np.add.at(out, codes, z)
    return (out / np.bincount(codes)[:, None]).astype(np.float32), list(uniques)


def embed_images(index: pd.DataFrame, model, *, policy: str | None = None, size: int | None = None,
                 scale: float = 1.0, channels: Sequence[str] | None = None,
                 channel_names: Sequence[str] | None = None, key_added: str | None = None,
                 channel_mode: str = "rgb", pool: str = "mean", tiles: str | os.PathLike | None = None,
                 batch_size: int = 64, device=None, progress=None):
    """Embed every field of a plate index; returns an AnnData of images.

    ``model``: a cellkit model folder (input size = its ``input_size``; its channel names must be
    ``channel_names``, default the index's) or ``"hf:NAME_OR_PATH"`` (a local ViT-MAE,
    `cellkit.models.hf`; input size = its ``image_size``; ``channel_mode`` ``"rgb"`` or
    ``"per-channel"``, ``pool`` ``"mean"`` or ``"cls"``). ``policy``: ``"resize"`` (default for
    ViT-MAE) or ``"tile"`` (default for cellkit models, with ``scale``); see the module doc.
    ``tiles``: where to keep the inputs store (default: a temporary folder, removed).

    Returns an AnnData: obs = the index metadata (index = ``field_id``, ``n_tiles``),
    ``obsm[key_added]`` float32 (F, D) (default ``X_<method>``: ``X_mae``, ``X_simclr``, ...),
    ``uns["cellkit"]["embeddings"][key]`` (model record + policy, size, scale).
    """
    import shutil

    from ..io.cells import open_cells, read_obs
    from ..io.plate_index import METADATA_COLUMNS
    from .checkpoint import read_config
    from .embed import embed_cells
    from .hf import embed_mae, is_hf, load_mae

    hf = is_hf(model)
    if hf:
        size = size or int(load_mae(model).config.image_size)
        policy = policy or "resize"
    else:
        config = read_config(model)
        size = size or int(config["input_size"])
        policy = policy or "tile"
    keep = tiles is not None
    folder = Path(tiles) if keep else Path(tempfile.mkdtemp(prefix="cellkit-tiles-")) / "tiles.zarr"
    try:
        write_tiles(index, folder, size=size, policy=policy, scale=scale, channels=channels,
                    channel_names=channel_names, overwrite=keep)
        obs = read_obs(open_cells(folder))
        tile_ids = obs["cell_id"].astype(str).to_numpy()
        if hf:
            import anndata as ad

            per_tile = ad.AnnData(obs=pd.DataFrame(index=tile_ids))
            key = key_added or "X_mae"
            embed_mae(per_tile, folder, str(model), channel_mode=channel_mode, pool=pool, key_added=key,
                      batch_size=batch_size, device=device, progress=progress)
            z, record = per_tile.obsm[key], dict(per_tile.uns["cellkit"]["embeddings"][key])
        else:
            from .options import EMBEDDING_KEYS

            z, config = embed_cells(folder, model, batch_size=batch_size, device=device, progress=progress)
            key = key_added or EMBEDDING_KEYS[config["method"]]
            record = {"model_dir": str(Path(model).resolve()), "method": config["method"],
                      "weights_sha256": config.get("weights_sha256", ""), "channels": list(config["channels"]),
                      "input_size": config["input_size"], "norm_mean": config["norm_mean"],
                      "norm_std": config["norm_std"]}
    finally:
        if not keep:
            shutil.rmtree(folder.parent, ignore_errors=True)
    z_field, ids = mean_by_field(z, obs["field_id"].astype(str).to_numpy())
    return _image_adata(index, ids, z_field, key, obs, METADATA_COLUMNS,
                        {**record, "policy": policy, "size": int(size), "scale": float(scale),
                         "tiles": str(folder) if keep else None})


def _image_adata(index, ids, z, key, tile_obs, metadata_columns, record):
    import anndata as ad

    from .. import __version__

    meta = index[[c for c in metadata_columns if c in index]].copy()
    meta["field_id"] = meta["field_id"].astype(str)
    meta = meta.drop_duplicates("field_id").set_index("field_id").loc[ids]
    meta["n_tiles"] = tile_obs.groupby(tile_obs["field_id"].astype(str)).size().loc[ids].to_numpy()
    for col in meta.columns:
        if meta[col].dtype == object:
            meta[col] = meta[col].astype("string").astype("category")
    adata = ad.AnnData(obs=meta)
    adata.obs_names = pd.Index(ids, dtype=str)
    adata.obsm[key] = z
    adata.uns["cellkit"] = {"embeddings": {key: {**record, "cellkit_version": __version__,
                                                 "torch_version": str(torch.__version__)}}}
    return adata
