"""Feature tables: AnnData for cellkit, a flat ``Metadata_``-prefixed table for pycytominer."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def to_anndata(obs: pd.DataFrame, features: pd.DataFrame, uns: Mapping | None = None):
    """Cells x features AnnData.

    Parameters
    ----------
    obs
        One row per cell (DESIGN.md: index ``cell_id``; plate, well, site, ..., label).
    features
        Same number of rows, in the same order (e.g. concatenated `measure_field` outputs);
        its index is ignored.
    uns
        Provenance stored as ``uns["cellkit"]`` (version, parameters, inputs).

    Returns
    -------
    AnnData with ``X`` float32 (cells x features), ``var_names`` = feature names, ``obs`` as given,
    ``uns["cellkit"]``.
    """
    import anndata as ad

    if len(obs) != len(features):
        raise ValueError(f"obs has {len(obs)} rows, features {len(features)}")
    if features.columns.duplicated().any():
        raise ValueError(f"duplicate feature names: {list(features.columns[features.columns.duplicated()])}")
    obs = obs.copy()
    obs.index = obs.index.astype(str)
    var = pd.DataFrame(index=pd.Index([str(c) for c in features.columns], name="feature"))
    adata = ad.AnnData(X=features.to_numpy(dtype=np.float32), obs=obs, var=var)
    adata.uns["cellkit"] = dict(uns or {})
    return adata


def to_pycytominer(adata) -> pd.DataFrame:
    """Flat table for pycytominer: ``Metadata_<column>`` for every obs column (and the cell id),
    then the feature columns unchanged (float32)."""
    meta = adata.obs.copy()
    meta.insert(0, "cell_id", adata.obs_names.astype(str))
    meta = meta.rename(columns=lambda c: c if str(c).startswith("Metadata_") else f"Metadata_{c}")
    for column in meta.columns:  # categoricals -> plain values (parquet and pycytominer friendly)
        if isinstance(meta[column].dtype, pd.CategoricalDtype):
            meta[column] = meta[column].astype(meta[column].cat.categories.dtype)
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    feats = pd.DataFrame(X.astype(np.float32), columns=list(adata.var_names), index=meta.index)
    clash = set(feats.columns) & set(meta.columns)
    if clash:
        raise ValueError(f"feature names clash with metadata: {sorted(clash)}")
    return pd.concat([meta, feats], axis=1).reset_index(drop=True)
