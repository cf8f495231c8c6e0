"""Batch and plate-position correction of profiles (``ck.pp.combat``, ``ck.pp.harmony``, ``ck.pp.position_correct``).

ComBat is scanpy's (`scanpy.pp.combat`), Harmony is harmonypy's (`harmonypy.run_harmony` on a PCA
from `scanpy.pp.pca`); the position correction is a median polish of row and column effects.
"""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd

WELL_PATTERN = re.compile(r"^\s*([A-Za-z]{1,2})\s*0*(\d{1,3})\s*$")


def _batch_codes(adata: ad.AnnData, key: str) -> pd.Series:
    if key not in adata.obs:
        raise KeyError(f"obs has no batch column {key!r}; obs columns: {list(adata.obs.columns)}")
    batches = adata.obs[key]
    if batches.isna().any():
        raise ValueError(f"obs[{key!r}] is missing for {int(batches.isna().sum())} row(s), "
                         f"e.g. {list(adata.obs_names[batches.isna().to_numpy()][:5])}")
    if batches.nunique() < 2:
        raise ValueError(f"obs[{key!r}] has one value ({batches.iloc[0]!r}): nothing to correct")
    return batches.astype(str)


def _no_nan(X: np.ndarray, what: str) -> None:
    if np.isnan(X).any():
        raise ValueError(f"{what}: {int(np.isnan(X).any(axis=0).sum())} feature(s) contain NaN; "
                         "drop them (ck.pp.feature_select) or impute first")


def combat(adata: ad.AnnData, *, key: str = "batch", copy: bool = False) -> ad.AnnData | None:
    """ComBat batch correction of ``X`` (`scanpy.pp.combat`, empirical Bayes location/scale per batch).

    Reads ``X`` (no NaN) and ``obs[key]``; writes ``X`` (float32) and ``uns["cellkit"]["combat"]``.
    Features constant within a batch are left to scanpy (it skips them with a warning).
    """
    from importlib.metadata import version

    import scanpy as sc

    from .get import _record

    adata = adata.copy() if copy else adata
    batches = _batch_codes(adata, key)
    X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float64)
    _no_nan(X, "combat")
    tmp = ad.AnnData(X=X, obs=pd.DataFrame({key: pd.Categorical(batches.to_numpy())}, index=adata.obs_names))
    corrected = sc.pp.combat(tmp, key=key, inplace=False)
    adata.X = np.nan_to_num(np.asarray(corrected), nan=0.0).astype(np.float32)
    _record(adata, "combat", dict(key=key, n_batches=int(batches.nunique()), scanpy_version=version("scanpy")))
    return adata if copy else None


def harmony(adata: ad.AnnData, *, key: str = "batch", n_comps: int = 50, use_rep: str | None = None,
            key_added: str = "X_harmony", theta: float = 2.0, random_state: int = 0,
            copy: bool = False) -> ad.AnnData | None:
    """Harmony (harmonypy) on a PCA of the profiles: batch-corrected components in ``obsm[key_added]``.

    The PCA (`scanpy.pp.pca`, ``n_comps`` capped at ``min(n_obs, n_vars) - 1``) is of ``X``, or
    ``obsm[use_rep]`` is corrected as given. Reads ``obs[key]``; writes ``obsm[key_added]`` (float32,
    rows x components) and ``uns["cellkit"]["harmony"]``. Seeded by ``random_state``.
    """
    from importlib.metadata import version

    import harmonypy
    import scanpy as sc

    from .get import _record, get_rep

    adata = adata.copy() if copy else adata
    batches = _batch_codes(adata, key)
    X = get_rep(adata, use_rep).astype(np.float64)
    _no_nan(X, "harmony")
    if use_rep is None:
        k = max(1, min(n_comps, min(X.shape) - 1))
        X = sc.pp.pca(X, n_comps=k, random_state=random_state, svd_solver="arpack" if k < min(X.shape) - 1 else None)
    meta = pd.DataFrame({key: batches.to_numpy()})
    result = harmonypy.run_harmony(X, meta, [key], theta=theta, random_state=random_state, verbose=False)
    Z = np.asarray(result.Z_corr)
    if Z.shape[0] != adata.n_obs:  # harmonypy returns components x rows
        Z = Z.T
    adata.obsm[key_added] = Z.astype(np.float32)
    _record(adata, "harmony", dict(key=key, n_comps=int(X.shape[1]), use_rep=use_rep, key_added=key_added,
                                   theta=theta, random_state=random_state,
                                   harmonypy_version=version("harmonypy")))
    return adata if copy else None


def well_position(wells: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Row letters and column numbers of well names (``"B02"`` -> ``("B", 2)``); bad names raise ValueError."""
    rows, cols = [], []
    for name, value in wells.astype(str).items():
        match = WELL_PATTERN.match(value)
        if match is None:
            raise ValueError(f"well {value!r} (row {name!r}) is not a well name like 'B02'")
        rows.append(match.group(1).upper())
        cols.append(int(match.group(2)))
    return np.asarray(rows), np.asarray(cols)


def position_correct(adata: ad.AnnData, *, well: str = "well", by: str | None = None, n_iter: int = 3,
                     use_rep: str | None = None, copy: bool = False) -> ad.AnnData | None:
    """Remove plate-row and plate-column effects by median polish (Tukey), feature by feature.

    Row effect = median of the wells in that plate row, column effect likewise, iterated ``n_iter``
    times on the residuals; the effects are subtracted. ``by=None`` estimates one layout effect over
    all plates (wells of every plate pooled, so a compound placed in one row of one plate does not
    define that row's effect); ``by="plate"`` polishes each plate on its own. Run it after per-plate
    normalization, so that plates share a scale. NaN is ignored by the medians and kept.

    Reads ``X`` / ``obsm[use_rep]`` and ``obs[well]`` (``"B02"``-style names); writes the same slot
    (float32) and ``uns["cellkit"]["position_correct"]``.
    """
    from .get import _groups, _record, _set_rep, get_rep

    adata = adata.copy() if copy else adata
    if well not in adata.obs:
        raise KeyError(f"obs has no well column {well!r}; obs columns: {list(adata.obs.columns)}")
    row_of, col_of = well_position(adata.obs[well])
    X = get_rep(adata, use_rep).astype(np.float64)
    out = X.copy()
    for _, idx in _groups(adata, by):
        R = out[idx]
        for _ in range(n_iter):
            for labels in (row_of[idx], col_of[idx]):
                for value in np.unique(labels):
                    sel = labels == value
                    effect = np.nanmedian(R[sel], axis=0)
                    R[sel] -= np.nan_to_num(effect)
        out[idx] = R + np.nanmedian(X[idx], axis=0) - np.nanmedian(R, axis=0)  # keep each feature's median
    _set_rep(adata, use_rep, None, out.astype(np.float32))
    _record(adata, "position_correct", dict(well=well, by=by, n_iter=n_iter, use_rep=use_rep))
    return adata if copy else None
