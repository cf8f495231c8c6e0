"""The per-cell AnnData (``cells.h5ad``) written beside a cells.zarr."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr

from .. import __version__
from .._atomic import atomic_path
from ..io import cells as cellstore


def cells_adata(root: zarr.Group):
    """AnnData of a cells store (complete or being finished).

    ``obs`` = the store's obs (index = cell_id, columns plate, well, site, batch, compound,
    concentration, moa, field_id, label, centroid_y, centroid_x, crop_index, crop_padded; text
    columns categorical, missing metadata as missing values);
    ``X`` = ``features`` (N, F) float32 (F = 0 when the store has none), NaN-free: a feature undefined
    for a cell (e.g. texture of a tiny object) is imputed with the feature's median over the cells of
    the same plate (`ck.pp.impute`; ``obs["n_imputed"]`` / ``var["n_imputed"]`` count where; the
    store's ``features`` keep the NaN), so scanpy takes ``X`` as is; ``var_names`` = feature names;
    ``uns["cellkit"]`` = version, parameters and inputs of the extraction.
    """
    import pandas as pd

    from ..features import to_anndata
    from ..features.table import categorical_obs

    obs = cellstore.read_obs(root)
    obs = obs.drop(columns=["cell_id"])
    obs.index.name = "cell_id"
    obs = categorical_obs(obs)  # text metadata -> categorical; missing values (no MOA, no compound) stay NaN
    features = cellstore.read_features(root)
    if features is None:
        features = pd.DataFrame(np.zeros((len(obs), 0), np.float32), index=obs.index)
    extract = dict(root.attrs.get("extract", {}))
    store = str(Path(root.store.root).resolve()) if hasattr(root.store, "root") else ""
    uns = {"version": __version__, "stage": "extract", "parameters": dict(extract.get("parameters", {})),
           "inputs": {**extract.get("inputs", {}), "cells_store": store},
           "fingerprint": extract.get("fingerprint", ""),
           "upstream": {"path": store, "kind": "cells_store", "fingerprint": extract.get("fingerprint", "")},
           "channels": list(root.attrs["channels"]), "crop_size": int(root.attrs["crop_size"]),
           **{k: extract[k] for k in ("objects", "dropped", "pad_value", "intensity", "segmentation") if k in extract}}
    from ..pp import impute

    adata = to_anndata(obs, features, uns)
    impute(adata, by="plate")
    return adata


def write_cells_adata(root: zarr.Group, path: str | os.PathLike) -> Path:
    """Write `cells_adata` of ``root`` to ``path`` (``.h5ad``, or a zarr AnnData for ``.zarr``), atomically."""
    adata = cells_adata(root)
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".zarr":
            adata.write_zarr(tmp)
        else:
            adata.write_h5ad(tmp)
    return path
