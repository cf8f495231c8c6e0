"""The one embedding loop over a cells.zarr and the one alignment of store-ordered embeddings to an
AnnData, shared by trained models (`cellkit.models.embed`) and ViT-MAEs (`cellkit.models.hf`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .data import CellChunks, iter_batches


def embed_store(data: CellChunks, embed_batch, *, batch_size: int = 256, num_workers: int = 0,
                progress=None) -> np.ndarray:
    """``embed_batch(crops (B, C, S, S) float32 tensor, masks (B, 2, S, S) or None) -> (B, D)`` over every
    crop of ``data`` (masks when ``data`` reads them), in batches.

    The one embedding loop (trained models and Hugging Face ViT-MAEs). Returns float32 (N, D) in store
    order; ``progress(cells_done, n_cells)`` after each batch.
    """
    out = None
    with torch.inference_mode():
        for batch in iter_batches(data, batch_size, num_workers=num_workers):
            rows = batch[-1]
            z = np.asarray(embed_batch(batch[0], batch[1] if len(batch) == 3 else None), np.float32)
            if out is None:
                out = np.empty((data.n_cells, z.shape[1]), np.float32)
            out[rows.numpy()] = z
            if progress:
                progress(int(rows[-1]) + 1, data.n_cells)
    return out


def store_embedding(adata, cells, z: np.ndarray, key: str, record: dict) -> None:
    """Write store-ordered embeddings ``z`` (N, D) of ``cells`` into ``adata.obsm[key]``, aligned by cell id
    (``adata.obs_names`` = store ``cell_id`` values), and ``record`` into
    ``adata.uns["cellkit"]["embeddings"][key]``. Raises ValueError for duplicate store ids and KeyError
    naming the cells of ``adata`` that the store lacks."""
    from ..io.cells import open_cells, read_obs

    store_ids = pd.Index(read_obs(open_cells(cells))["cell_id"].astype(str))
    if store_ids.has_duplicates:
        raise ValueError(f"{cells} has duplicate cell_id values: cannot align embeddings")
    pos = store_ids.get_indexer(adata.obs_names.astype(str))
    if (pos < 0).any():
        missing = adata.obs_names[pos < 0]
        raise KeyError(f"{len(missing)} cells of the AnnData are not in {cells} (e.g. {list(missing[:3])})")
    adata.obsm[key] = z[pos]
    adata.uns.setdefault("cellkit", {}).setdefault("embeddings", {})[key] = record
