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


def categorical_obs(obs: pd.DataFrame) -> pd.DataFrame:
    """Text (object) columns as categoricals, missing values (no MOA, no compound) kept missing, so that
    the table writes to h5ad (h5py cannot write object columns holding None). Returns a copy."""
    obs = obs.copy()
    for column in obs.columns:
        if obs[column].dtype == object:
            values = [None if pd.isna(v) else str(v) for v in obs[column]]
            categories = pd.Index(sorted({v for v in values if v is not None}), dtype=object)
            obs[column] = pd.Categorical(values, categories=categories)
    return obs


def embedding_prefix(key: str) -> str:
    """Column prefix of an ``obsm`` entry: ``X_simclr`` -> ``simclr`` (columns ``simclr_0..n``)."""
    return key[2:] if key.startswith("X_") else key


def to_pycytominer(adata, obsm: list[str] | None = None, features: bool = True, *, prefix: str = "Metadata_",
                   id_column: str | None = "cell_id") -> pd.DataFrame:
    """Flat table for pycytominer / copairs: ``Metadata_<column>`` for every obs column (and the cell id),
    then the feature columns unchanged (float32), then each ``obsm`` embedding as ``<rep>_0..<rep>_{D-1}``.

    Parameters
    ----------
    adata
        Cells (or wells) x features AnnData.
    obsm
        Keys of ``adata.obsm`` to add as columns (``X_simclr`` -> ``simclr_0``, ...); default none.
        Each must be 2-D numeric with one row per observation.
    features
        Include the features of ``X`` (False: metadata and embeddings only).
    prefix
        Prefix of the metadata columns (``""``: obs columns under their own names).
    id_column
        Name of the column holding the obs names (before the prefix); None: no such column.

    Raises ValueError for a missing or non-numeric embedding, and for column names that clash.
    """
    meta = adata.obs.copy()
    if id_column is not None:
        meta.insert(0, id_column, adata.obs_names.astype(str))
    meta = meta.rename(columns=lambda c: c if str(c).startswith(prefix) else f"{prefix}{c}")
    for column in meta.columns:  # categoricals -> plain values (parquet and pycytominer friendly)
        if isinstance(meta[column].dtype, pd.CategoricalDtype):
            meta[column] = meta[column].astype(meta[column].cat.categories.dtype)
    blocks = [meta]
    if features:
        X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        blocks.append(pd.DataFrame(X.astype(np.float32), columns=list(adata.var_names), index=meta.index))
    for key in obsm or []:
        if key not in adata.obsm:
            raise ValueError(f"no embedding {key!r} in obsm; present: {sorted(adata.obsm.keys()) or 'none'}")
        z = np.asarray(adata.obsm[key])
        if z.ndim != 2 or not np.issubdtype(z.dtype, np.number):
            raise ValueError(f"obsm[{key!r}] is {z.dtype} with shape {z.shape}; expected a 2-D numeric embedding")
        prefix = embedding_prefix(key)
        blocks.append(pd.DataFrame(z.astype(np.float32), columns=[f"{prefix}_{i}" for i in range(z.shape[1])],
                                   index=meta.index))
    columns = pd.Index([c for b in blocks for c in b.columns])
    clash = columns[columns.duplicated()]
    if len(clash):
        raise ValueError(f"column names clash (metadata, features, embeddings): {sorted(set(clash))[:10]}")
    return pd.concat(blocks, axis=1).reset_index(drop=True)
