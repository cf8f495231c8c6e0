"""Clustering with scanpy (`cluster`: PCA, kNN graph, Leiden, UMAP) and `marker_features`."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd

from ..get import _column, _record, get_rep, rep_key


def cluster(adata: ad.AnnData, *, use_rep: str | None = None, n_pcs: int | None = 30, n_neighbors: int = 15,
            resolution: float = 1.0, umap: bool = True, random_state: int = 0, key_added: str = "leiden",
            pca_key: str = "X_pca", neighbors_key: str | None = None, umap_key: str = "X_umap",
            copy: bool = False) -> ad.AnnData | None:
    """Cluster cells with scanpy: (PCA), kNN graph, Leiden, UMAP.

    ``use_rep``: an obsm key (e.g. ``"X_simclr"``) used as is; ``None`` (or ``"X"``) = PCA of ``X``
    with ``n_pcs`` components, written to ``obsm[pca_key]`` (NaN features are set to 0 first).
    Writes ``obsm[pca_key]`` (when computed), the kNN graph (``uns["neighbors"]`` and
    ``obsp["distances", "connectivities"]``, or ``uns[neighbors_key]`` and
    ``obsp["<neighbors_key>_distances", "<neighbors_key>_connectivities"]``), ``obs[key_added]``
    (categorical, clusters in numeric order), ``obsm[umap_key]`` when ``umap``, and
    ``uns["cellkit"]["cluster"]``. Modifies ``adata`` in place, or returns a modified copy with
    ``copy=True``. Results are fixed by ``random_state``.
    """
    import scanpy as sc

    adata = adata.copy() if copy else adata
    use_rep = rep_key(use_rep)
    if use_rep is None:
        X = np.nan_to_num(get_rep(adata, None).astype(np.float32))
        n = min(n_pcs or 50, X.shape[1] - 1, X.shape[0] - 1)
        adata.obsm[pca_key] = sc.pp.pca(X, n_comps=n, random_state=random_state)
        rep, used_pcs = pca_key, n
    else:
        get_rep(adata, use_rep)
        rep, used_pcs = use_rep, None
    sc.pp.neighbors(adata, n_neighbors=n_neighbors, use_rep=rep, random_state=random_state, key_added=neighbors_key)
    sc.tl.leiden(adata, resolution=resolution, random_state=random_state, key_added=key_added,
                 flavor="igraph", n_iterations=2, directed=False, neighbors_key=neighbors_key)
    labels = adata.obs[key_added]
    adata.obs[key_added] = labels.cat.reorder_categories(sorted(labels.cat.categories, key=int))
    if umap:
        sc.tl.umap(adata, random_state=random_state, key_added=umap_key, neighbors_key=neighbors_key or "neighbors")
    _record(adata, "cluster", dict(use_rep=rep, n_neighbors=n_neighbors, resolution=resolution,
                                   random_state=random_state, key_added=key_added, pca_key=pca_key, n_pcs=used_pcs,
                                   neighbors_key=neighbors_key or "neighbors", umap_key=umap_key))
    return adata if copy else None


def marker_features(adata: ad.AnnData, *, groupby: str = "leiden", n_features: int = 5,
                    method: str = "wilcoxon") -> pd.DataFrame:
    """Features of ``X`` that mark each group (scanpy ``rank_genes_groups``).

    Returns a long DataFrame with columns ``group, rank, feature, score, pvals_adj``: the top
    ``n_features`` per group. Writes scanpy's ``uns["rank_genes_groups"]``; NaN values are
    treated as 0 for the test.
    """
    import scanpy as sc

    _column(adata, groupby, "group")
    sub = adata if not np.isnan(get_rep(adata, None)).any() else _nan_free(adata)
    with warnings.catch_warnings():  # log fold changes are meaningless on z-scored features (not returned)
        warnings.simplefilter("ignore", RuntimeWarning)
        sc.tl.rank_genes_groups(sub, groupby, method=method, use_raw=False)
    if sub is not adata:
        adata.uns["rank_genes_groups"] = sub.uns["rank_genes_groups"]
    frames = []
    for group in sub.obs[groupby].astype("category").cat.categories:
        df = sc.get.rank_genes_groups_df(sub, group=str(group)).head(n_features)
        frames.append(pd.DataFrame({"group": str(group), "rank": np.arange(1, len(df) + 1), "feature": df["names"],
                                    "score": df["scores"], "pvals_adj": df["pvals_adj"]}))
    return pd.concat(frames, ignore_index=True)


def _nan_free(adata):
    sub = adata.copy()
    sub.X = np.nan_to_num(get_rep(adata, None))
    return sub
