"""The classical baseline: incremental PCA on flattened, normalized, centre-cropped crops.

Fitted out of core: crops are read chunk by chunk from the cells.zarr and fed to
``sklearn.decomposition.IncrementalPCA.partial_fit``; memory is bounded by a batch.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import IncrementalPCA
from torch import nn

from .augment import AugmentConfig, view
from .data import CellChunks, iter_batches


class PCAModel(nn.Module):
    """``embed(x) = (flatten(x) - mean) @ components.T`` for ``x`` (B, C, S, S); output (B, n_components)."""

    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        n_features = in_channels * int(config["input_size"]) ** 2
        k = int(config["n_components"])
        self.register_buffer("components", torch.zeros(k, n_features))
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("explained_variance_ratio", torch.zeros(k))

    def embed(self, x):
        return (x.flatten(1).float() - self.mean) @ self.components.T


def fit_pca(data: CellChunks, config: dict, *, batch_size: int | None = None, num_workers: int = 0,
            progress=None) -> PCAModel:
    """Fit `PCAModel` on every crop of ``data`` (normalized by the dataset), in store order.

    ``config["n_components"]`` (k) is lowered to the number of cells or features when larger
    (the config is updated in place). ``batch_size`` defaults to ``2k``: each ``partial_fit``
    costs an SVD of ``(k + batch) x features``, so total work ~ (k + b)^2 / b is near its minimum
    there. ``progress(done, total)`` is called after each batch.
    """
    n, size = data.n_rows(), int(config["input_size"])
    n_features = len(data.channels) * size * size
    k = min(int(config["n_components"]), n, n_features)
    config["n_components"] = k
    pca = IncrementalPCA(n_components=k)
    held, done = None, 0
    aug = AugmentConfig.from_dict(config.get("augment"))
    offset = np.asarray(config["norm_mean"]) / np.asarray(config["norm_std"]) if "norm_mean" in config else None
    for batch in iter_batches(data, max(batch_size or 2 * k, k), num_workers=num_workers):
        masks = batch[1] if len(batch) == 3 else None
        flat = view(batch[0], aug, size, masks=masks, offset=offset).flatten(1).numpy()  # float32: half the work of float64 SVDs
        # partial_fit needs at least k rows: a short last batch joins the one before it.
        if held is not None and len(flat) >= k:
            pca.partial_fit(held)
            held = flat
        else:
            held = flat if held is None else np.concatenate([held, flat])
        done += len(flat)
        if progress:
            progress(done, n)
    pca.partial_fit(held)
    model = PCAModel(len(data.channels), config)
    model.components.copy_(torch.from_numpy(pca.components_).float())
    model.mean.copy_(torch.from_numpy(pca.mean_).float())
    model.explained_variance_ratio.copy_(torch.from_numpy(pca.explained_variance_ratio_).float())
    return model
