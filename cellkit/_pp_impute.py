"""Imputation of undefined feature values (``ck.pp.impute``), so that ``X`` is NaN-free for scanpy."""

from __future__ import annotations

import anndata as ad
import numpy as np


def impute(adata: ad.AnnData, *, by: str | None = "plate", control: str | np.ndarray | None = None,
           copy: bool = False) -> ad.AnnData | None:
    """Replace NaN in ``X`` by the feature's median over the reference rows of the same group.

    The rule: reference rows are the ``control`` rows (obs query or mask; None: all rows) of the row's
    ``by`` group (plate; None or a missing column: all rows). Where a feature has no defined reference
    value in the group, the median over all reference rows is used, and 0 where the feature is
    undefined everywhere. Where values were imputed is kept: ``obs["n_imputed"]`` (features imputed per
    row), ``var["n_imputed"]`` (rows imputed per feature) and ``uns["cellkit"]["impute"]``.
    Without NaN, only the zero counts are written.

    Reads and writes ``X`` (float32).
    """
    import warnings

    from .get import _groups, _record, control_mask, get_rep

    adata = adata.copy() if copy else adata
    X = get_rep(adata, None).astype(np.float32, copy=True)
    missing = np.isnan(X)
    adata.obs["n_imputed"] = missing.sum(axis=1).astype(np.int64)
    adata.var["n_imputed"] = missing.sum(axis=0).astype(np.int64)
    if missing.any():
        ref = np.ones(adata.n_obs, dtype=bool) if control is None else control_mask(adata, control)
        group_by = by if by is not None and by in adata.obs else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
            overall = np.nan_to_num(np.nanmedian(X[ref], axis=0), nan=0.0)
            for _, rows in _groups(adata, group_by):
                hole = missing[rows]
                if not hole.any():
                    continue
                fill = np.nanmedian(X[rows[ref[rows]]], axis=0) if ref[rows].any() else overall
                fill = np.where(np.isnan(fill), overall, fill)
                block = X[rows]
                block[hole] = np.broadcast_to(fill, block.shape)[hole]
                X[rows] = block
        adata.X = X
    _record(adata, "impute", dict(by=by, control=control if isinstance(control, str) or control is None else "<mask>",
                                  n_values=int(missing.sum()), rule="median of the group's reference rows"))
    return adata if copy else None
