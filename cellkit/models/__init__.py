"""Encoders on cell crops: SimCLR, BYOL, autoencoder, MAE, weak supervision, PCA, random-init control.

``train(cells_zarr, model_dir, method=...)`` writes a model folder; ``embed(adata, cells_zarr,
model_dir)`` writes ``adata.obsm["X_<method>"]``.
"""

from .augment import AugmentConfig, augment, blur, center_crop, view
from .checkpoint import ChannelMismatchError, IncompleteModelError, load_model
from .data import CellChunks, cell_view_size, channel_stats, iter_batches
from ..io.cells import obs_adata  # the store's obs as an AnnData (lives in io)
from .embed import embed, embed_cells, embed_h5ad
from .encoders import BYOL, ConvAutoencoder, RandomEncoder, ResNetEncoder, SimCLR, WeaklySupervised, build_model
from .losses import byol_loss, nt_xent, supcon
from .pca import PCAModel, fit_pca
from .options import (DEFAULTS, EMBEDDING_KEYS, METHODS, MICROSCOPY_AUGMENT, PRESETS, default_config, read_config_file,
                      training_options)
from .train import embedding_spread, train, weak_labels

__all__ = [
    "AugmentConfig", "BYOL", "CellChunks", "ChannelMismatchError", "ConvAutoencoder", "DEFAULTS", "EMBEDDING_KEYS",
    "IncompleteModelError", "METHODS", "MICROSCOPY_AUGMENT", "PCAModel", "PRESETS", "RandomEncoder", "ResNetEncoder",
    "SimCLR", "WeaklySupervised", "augment", "blur", "build_model", "byol_loss", "cell_view_size", "center_crop",
    "channel_stats", "default_config", "embed", "embed_cells", "embed_h5ad", "embedding_spread", "fit_pca",
    "iter_batches", "load_model",
    "nt_xent", "obs_adata", "read_config_file", "supcon", "train", "training_options", "view", "weak_labels",
]
