"""`aggregate`: cells -> wells -> treatments (mean or median), in memory or out of core."""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import DuplicateIdError
from ..get import _record, rep_key
from ..io.lazy_anndata import dense_rows as _rows
from ..io.lazy_anndata import open_rows as _open_source


def aggregate(data: ad.AnnData | str | os.PathLike, *, by: Sequence[str] | str = ("plate", "well"),
              func: str = "mean", use_rep: str | None = None, chunk_size: int = 25_000,
              duplicates: str = "error") -> ad.AnnData:
    """Aggregate rows (cells) into groups (wells, treatments).

    Parameters
    ----------
    data
        AnnData in memory or opened backed (``read_h5ad(..., backed="r")``), or the path of an
        ``.h5ad`` (opened backed) or AnnData ``.zarr`` store (read lazily with zarr). The matrix
        is read ``chunk_size`` rows at a time, so memory stays O(groups x features + chunk).
    by
        Obs column(s) defining the groups.
    func
        ``"mean"`` (chunked sums) or ``"median"`` (per batch of groups; fastest when a group's
        rows are contiguous, as extraction writes them).
    use_rep
        ``None`` (or ``"X"``) for ``X``, else an ``obsm`` key.
    duplicates
        Rows whose obs name (cell id) repeats an earlier row's: ``"error"`` (`DuplicateIdError`
        naming them; never counted twice) or ``"drop"`` (keep the first; the number dropped is
        recorded in ``uns["cellkit"]["aggregate"]["duplicates_dropped"]``).

    NaN values are skipped (a group's value is NaN only where all its rows are NaN).

    Returns
    -------
    AnnData with one row per group (index ``"<key1>/<key2>"``, sorted), ``X`` float32 (groups,
    features), ``obs`` = the ``by`` columns, every obs column constant within each group
    (metadata such as compound, moa, batch; kept when constant in at least half of the groups,
    missing where it varies), and ``n_cells`` (rows aggregated; for input that
    already carries ``n_cells``, its sum); ``uns["cellkit"]["aggregate"]`` records parameters.
    """
    if func not in ("mean", "median"):
        raise ValueError(f"func must be 'mean' or 'median', got {func!r}")
    if duplicates not in ("error", "drop"):
        raise ValueError(f"duplicates must be 'error' or 'drop', got {duplicates!r}")
    by = [by] if isinstance(by, str) else list(by)
    use_rep = rep_key(use_rep)
    source, obs, var_names, obsm, close = _open_source(data)
    try:
        missing = [c for c in by if c not in obs]
        if missing:
            raise KeyError(f"obs has no column(s) {missing}; obs columns: {list(obs.columns)}")
        repeated = np.asarray(obs.index.duplicated(keep="first"))
        if repeated.any() and duplicates == "error":
            names = list(dict.fromkeys(obs.index[repeated].astype(str)))
            raise DuplicateIdError(
                f"{len(names)} cell id(s) appear more than once in {_name(data)}, e.g. {names[:5]}; "
                "aggregating would count those cells twice",
                "rebuild the cells table (cellkit extract) or pass duplicates='drop' (--drop-duplicates) to keep "
                "the first row of each")
        obs = obs[~repeated] if repeated.any() else obs
        keys = obs[by].astype(str)
        if keys.isna().any().any():
            raise ValueError(f"obs columns {by} have missing values")
        codes, uniques = pd.MultiIndex.from_frame(keys).factorize(sort=True)
        codes = np.asarray(codes)
        matrix = source.X if use_rep is None else obsm(use_rep)
        n_groups, n_rows = len(uniques), len(repeated)
        n_features = matrix.shape[1]
        # repeated rows are read (rows stay in file order) into one extra group, then discarded
        all_codes = np.full(n_rows, n_groups, dtype=codes.dtype)
        all_codes[~repeated] = codes
        n_all = n_groups + int(repeated.any())
        if func == "mean":
            values = _chunked_mean(matrix, all_codes, n_all, n_rows, chunk_size)[:n_groups]
        else:
            values = _grouped_median(matrix, all_codes, n_all, chunk_size)[:n_groups]
    finally:
        close()
    # metadata: the by columns, then every column constant within at least half of the groups
    # (missing in the groups where it varies: e.g. batch for DMSO pooled over plates)
    group_obs = obs.assign(_g=codes)
    constant = group_obs.groupby("_g", observed=True).nunique(dropna=False).le(1)
    carry = [c for c in obs.columns if c not in by and c != "n_cells" and c in constant
             and constant[c].mean() >= 0.5]
    first = group_obs.drop_duplicates("_g").set_index("_g").sort_index()
    out_obs = pd.DataFrame({c: np.asarray(first[c], dtype=object if c in carry else None) for c in by + carry})
    for c in carry:
        out_obs.loc[~constant[c].to_numpy(), c] = None
    for c in by + carry:
        if isinstance(obs[c].dtype, pd.CategoricalDtype):
            out_obs[c] = out_obs[c].astype(str).where(out_obs[c].notna(), None)
        elif pd.api.types.is_numeric_dtype(obs[c]):
            out_obs[c] = pd.to_numeric(out_obs[c])
    counts = np.bincount(codes, minlength=n_groups)
    if "n_cells" in obs:
        counts = np.bincount(codes, weights=np.asarray(obs["n_cells"], dtype=float), minlength=n_groups)
    out_obs["n_cells"] = counts.astype(np.int64)
    out_obs.index = ["/".join(k) for k in uniques]
    var = pd.DataFrame(index=pd.Index(var_names if use_rep is None else
                                      [f"{use_rep}_{i}" for i in range(n_features)]).astype(str))
    result = ad.AnnData(X=values.astype(np.float32), obs=out_obs, var=var)
    _record(result, "aggregate", dict(by=by, func=func, use_rep=use_rep, n_input=int(n_rows),
                                      duplicates_dropped=int(repeated.sum()),
                                      source=str(data) if not isinstance(data, ad.AnnData) else "AnnData"))
    return result


def _chunked_mean(matrix, codes, n_groups, n_rows, chunk_size):
    """Per-group nan-mean from float32 blocks of ``chunk_size`` rows (sums kept in float64)."""
    sums = np.zeros((n_groups, matrix.shape[1]))
    missing = np.zeros((n_groups, matrix.shape[1]))
    for start in range(0, n_rows, chunk_size):
        stop = min(start + chunk_size, n_rows)
        block = _rows(matrix, start, stop, np.float32)
        indicator = sp.csr_matrix((np.ones(stop - start, dtype=np.float32), (codes[start:stop], np.arange(stop - start))),
                                  shape=(n_groups, stop - start))
        nan = np.isnan(block)
        if nan.any():  # a copy only when needed: block may be a view of an in-memory X
            block = np.where(nan, np.float32(0), block)
            missing += indicator @ nan.astype(np.float32)
        sums += indicator @ block
    counts = np.bincount(codes, minlength=n_groups)[:, None] - missing
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _grouped_median(matrix, codes, n_groups, chunk_size):
    """Per-group nan-median, reading the rows of about ``chunk_size`` rows' worth of groups at a time."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_groups + 1))
    out = np.full((n_groups, matrix.shape[1]), np.nan)
    g = 0
    while g < n_groups:
        h = g + 1  # groups g..h-1 hold at most chunk_size rows (or are one group)
        while h < n_groups and bounds[h + 1] - bounds[g] <= chunk_size:
            h += 1
        rows = np.sort(order[bounds[g]:bounds[h]])
        parts = []  # read the span of these rows chunk by chunk, keeping only the rows needed
        for start in range(int(rows[0]), int(rows[-1]) + 1, chunk_size):
            wanted = rows[(rows >= start) & (rows < start + chunk_size)]
            if len(wanted):
                parts.append(_rows(matrix, start, int(wanted[-1]) + 1, np.float32)[wanted - start])
        block = np.concatenate(parts) if len(parts) > 1 else parts[0]
        by_group = np.argsort(codes[rows], kind="stable")
        edges = np.searchsorted(codes[rows][by_group], np.arange(g, h + 1))
        median = np.nanmedian if np.isnan(block).any() else np.median
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN
            for k in range(g, h):
                out[k] = median(block[by_group[edges[k - g]:edges[k - g + 1]]], axis=0)
        g = h
    return out


def _name(data) -> str:
    return "the AnnData" if isinstance(data, ad.AnnData) else str(data)
