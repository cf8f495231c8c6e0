"""Tools, scanpy style: aggregate profiles, score them against MOA labels, cluster cells.

- `aggregate`: cells -> wells -> treatments (mean or median), in memory or out of core.
- `moa_accuracy`: 1-NN cosine NSC / NSCB accuracy (rules in BENCHMARKS.md), per-MOA accuracy,
  confusion matrix; `mean_average_precision` (copairs' definition); `loco_classification`.
- `cluster` (scanpy neighbors + Leiden + UMAP) and `marker_features`.
- `build_index` / `search`: FAISS similarity search (`cellkit.search`); `robustness` (`cellkit.robustness`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .pp import _record, get_rep
from .search import build_index, search  # noqa: F401  (ck.tl.build_index, ck.tl.search: FAISS similarity search)

# --------------------------------------------------------------------------- aggregate


def _open_source(data):
    """(X-like sliceable, obs DataFrame, var_names, obsm getter, closer) for AnnData or a path."""
    if isinstance(data, ad.AnnData):
        return data, data.obs, data.var_names, (lambda key: data.obsm[key]), (lambda: None)
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"no AnnData at {path}")
    if path.suffix == ".h5ad":
        backed = ad.read_h5ad(path, backed="r")
        return backed, backed.obs, backed.var_names, (lambda key: backed.obsm[key]), backed.file.close
    import zarr
    from anndata.io import read_elem

    group = zarr.open_group(str(path), mode="r")
    obs = read_elem(group["obs"])
    var = read_elem(group["var"])

    class _Zarr:  # only what aggregate needs: .X sliced by rows
        X = group["X"]
        n_obs = len(obs)

    def obsm(key):
        if key not in group["obsm"]:
            raise KeyError(f"obsm has no {key!r}; obsm keys: {list(group['obsm'].array_keys())}")
        return group["obsm"][key]

    return _Zarr(), obs, var.index, obsm, (lambda: None)


def _rows(matrix, start: int, stop: int, dtype=np.float64) -> np.ndarray:
    block = matrix[start:stop]
    if hasattr(block, "toarray"):
        block = block.toarray()
    return np.asarray(block, dtype=dtype)


def aggregate(data: ad.AnnData | str | os.PathLike, *, by: Sequence[str] | str = ("plate", "well"),
              func: str = "mean", use_rep: str | None = None, chunk_size: int = 25_000) -> ad.AnnData:
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
        ``None`` for ``X``, else an ``obsm`` key.

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
    by = [by] if isinstance(by, str) else list(by)
    source, obs, var_names, obsm, close = _open_source(data)
    try:
        missing = [c for c in by if c not in obs]
        if missing:
            raise KeyError(f"obs has no column(s) {missing}; obs columns: {list(obs.columns)}")
        keys = obs[by].astype(str)
        if keys.isna().any().any():
            raise ValueError(f"obs columns {by} have missing values")
        codes, uniques = pd.MultiIndex.from_frame(keys).factorize(sort=True)
        codes = np.asarray(codes)
        matrix = source.X if use_rep is None else obsm(use_rep)
        n_groups, n_rows = len(uniques), len(obs)
        n_features = matrix.shape[1]
        if func == "mean":
            values = _chunked_mean(matrix, codes, n_groups, n_rows, chunk_size)
        else:
            values = _grouped_median(matrix, codes, n_groups, chunk_size)
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


# --------------------------------------------------------------------------- evaluation helpers


def _column(adata: ad.AnnData, name: str, what: str) -> pd.Series:
    if name not in adata.obs:
        raise KeyError(f"{what} column {name!r} is not in obs; obs columns: {list(adata.obs.columns)}")
    return adata.obs[name]


def _scored_profiles(adata, *, label, use_rep, control):
    """Rows to score (non-control, labelled), their matrix, and the dropped rows."""
    labels = _column(adata, label, "label")
    keep = labels.notna().to_numpy() & (labels.astype(str) != "").to_numpy()
    unlabelled = list(adata.obs_names[~keep])
    if control is not None:
        try:
            keep &= ~np.asarray(adata.obs.eval(control), dtype=bool)
        except Exception as err:
            raise ValueError(f"cannot evaluate control query {control!r} on obs: {err}") from err
    X = get_rep(adata, use_rep)[keep].astype(np.float64)
    bad = np.isnan(X).any(axis=0)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} feature(s) contain NaN (e.g. {list(np.asarray(adata.var_names)[bad][:5]) if use_rep is None else ''}); "
                         "drop them (ck.pp.feature_select with 'nan') or impute before scoring")
    return adata[keep], X, unlabelled


def cosine_similarity(X: np.ndarray) -> np.ndarray:
    """Cosine similarity (n, n) of the rows of ``X`` (n, d). Zero rows raise ValueError."""
    norms = np.linalg.norm(X, axis=1)
    if (norms == 0).any():
        raise ValueError(f"{int((norms == 0).sum())} profile(s) are all zeros: cosine similarity is undefined")
    U = X / norms[:, None]
    return U @ U.T


def nearest_allowed(sim: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Index of each row's most similar allowed column; -1 where none is allowed.

    Ties (equal similarity) go to the lowest column index: the profile that comes first in
    obs order. ``sim`` and ``allowed`` are (n, n).
    """
    masked = np.where(allowed, sim, -np.inf)
    best = masked.argmax(axis=1)  # argmax returns the first of equal maxima
    best[~allowed.any(axis=1)] = -1
    return best


@dataclass
class MoaAccuracy:
    """Result of `moa_accuracy`.

    ``table``: one row per scored profile (label, compound, batch and for each of ``nsc`` /
    ``nscb``: ``<rule>_neighbor``, ``<rule>_similarity``, ``<rule>_predicted``, ``<rule>_correct``
    (missing when excluded)). ``excluded``: rule -> profiles left out because no allowed
    neighbour shares their label.
    """
    nsc: float
    nscb: float | None
    n_nsc: int
    n_nscb: int
    table: pd.DataFrame
    excluded: dict = field(default_factory=dict)
    unlabelled: list = field(default_factory=list)

    def summary(self) -> dict:
        return {"NSC": self.nsc, "NSCB": self.nscb, "n_NSC": self.n_nsc, "n_NSCB": self.n_nscb,
                "excluded_NSC": list(self.excluded.get("nsc", [])),
                "excluded_NSCB": list(self.excluded.get("nscb", [])), "unlabelled": list(self.unlabelled)}

    def per_label(self, rule: str = "nsc") -> pd.DataFrame:
        """Accuracy, number scored and number correct per label for ``rule``."""
        scored = self.table[self.table[f"{rule}_correct"].notna()]
        grouped = scored.groupby("label")[f"{rule}_correct"]
        return pd.DataFrame({"accuracy": grouped.mean().astype(float), "n": grouped.size(),
                             "correct": grouped.sum().astype(int)})

    def confusion(self, rule: str = "nsc") -> pd.DataFrame:
        """Confusion matrix (true label rows x predicted label columns) of the scored profiles."""
        scored = self.table[self.table[f"{rule}_correct"].notna()]
        labels = sorted(set(scored["label"]) | set(scored[f"{rule}_predicted"]))
        return pd.crosstab(pd.Categorical(scored["label"], labels), pd.Categorical(scored[f"{rule}_predicted"], labels),
                           rownames=["true"], colnames=["predicted"], dropna=False)


def moa_accuracy(adata: ad.AnnData, *, label: str = "moa", compound: str = "compound", batch: str | None = "batch",
                 use_rep: str | None = None, control: str | None = None,
                 key_added: str | None = "moa_accuracy") -> MoaAccuracy:
    """1-nearest-neighbour (cosine) MOA accuracy: NSC and NSCB (Ljosa 2013; Ando 2017).

    Each profile (usually a treatment = compound + concentration) is matched to its most
    cosine-similar allowed profile; it is correct when that neighbour has the same label.

    - NSC: allowed = profiles of other compounds.
    - NSCB: allowed = profiles of other compounds and other batches (skipped when ``batch`` is None).
    - A profile none of whose allowed profiles shares its label is excluded from that score
      and listed in ``excluded`` (in BBBC021 NSCB: Kinase inhibitors, Cholesterol-lowering).
    - Ties: the allowed profile first in obs order wins (see `nearest_allowed`).
    - Rows with a missing label, and rows matching ``control`` (an obs query such as
      ``"compound == 'DMSO'"``), are neither scored nor candidates; unlabelled rows are reported.

    Reads ``X`` / ``obsm[use_rep]``, ``obs[label, compound, batch]``; writes
    ``uns[key_added]`` (the summary) unless ``key_added`` is None. Raises KeyError when a
    column is missing and ValueError for NaN or all-zero profiles.
    """
    _column(adata, compound, "compound")
    if batch is not None:
        _column(adata, batch, "batch")
    sub, X, unlabelled = _scored_profiles(adata, label=label, use_rep=use_rep, control=control)
    if sub.n_obs < 2:
        raise ValueError(f"need at least 2 labelled profiles to score, got {sub.n_obs}")
    labels = sub.obs[label].astype(str).to_numpy()
    compounds = sub.obs[compound].astype(str).to_numpy()
    sim = cosine_similarity(X)
    same_label = labels[:, None] == labels[None, :]
    rules = {"nsc": compounds[:, None] != compounds[None, :]}
    if batch is not None:
        batches = sub.obs[batch].astype(str).to_numpy()
        rules["nscb"] = rules["nsc"] & (batches[:, None] != batches[None, :])
    table = pd.DataFrame({"label": labels, "compound": compounds}, index=sub.obs_names)
    if batch is not None:
        table["batch"] = batches
    scores, counts, excluded = {}, {}, {}
    for rule, allowed in rules.items():
        best = nearest_allowed(sim, allowed)
        valid = (allowed & same_label).any(axis=1)
        has = best >= 0
        table[f"{rule}_neighbor"] = np.where(has, np.asarray(sub.obs_names)[np.maximum(best, 0)], None)
        table[f"{rule}_similarity"] = np.where(has, sim[np.arange(len(best)), np.maximum(best, 0)], np.nan)
        table[f"{rule}_predicted"] = np.where(has, labels[np.maximum(best, 0)], None)
        correct = pd.array(np.where(has, labels[np.maximum(best, 0)] == labels, False), dtype="boolean")
        correct[~valid] = pd.NA
        table[f"{rule}_correct"] = correct
        excluded[rule] = list(sub.obs_names[~valid])
        counts[rule] = int(valid.sum())
        scores[rule] = float(np.mean(np.asarray(correct[valid], dtype=bool))) if valid.any() else float("nan")
    result = MoaAccuracy(nsc=scores["nsc"], nscb=scores.get("nscb"), n_nsc=counts["nsc"],
                         n_nscb=counts.get("nscb", 0), table=table, excluded=excluded, unlabelled=unlabelled)
    if key_added:
        adata.uns[key_added] = {k: ("None" if v is None else v) for k, v in result.summary().items()}
    return result


def average_precision_ranks(relevance: np.ndarray) -> float:
    """AP of one ranked list of 0/1 relevances: mean over positives of precision at their rank."""
    hits = np.cumsum(relevance)
    ranks = np.flatnonzero(relevance)
    return float(np.mean(hits[ranks] / (ranks + 1))) if len(ranks) else float("nan")


def mean_average_precision(adata: ad.AnnData, *, label: str = "moa", compound: str = "compound",
                           use_rep: str | None = None, control: str | None = None) -> tuple[float, pd.DataFrame]:
    """mAP of retrieving same-label profiles by cosine similarity (copairs' definition).

    For each query, positives are profiles with the same label and another compound,
    negatives are profiles with another label (same-compound profiles are neither, and are
    left out of the ranking). Candidates are ranked by decreasing similarity, positives before
    negatives at equal similarity (as copairs' stable sort does). AP = mean precision at each
    positive's rank. Queries without a positive are dropped (NaN).

    Returns ``(mAP over queries, per-profile DataFrame with label, compound,
    average_precision, n_pos_pairs, n_total_pairs)``. Per-label mAP:
    ``table.groupby("label").average_precision.mean()``.
    """
    _column(adata, compound, "compound")
    sub, X, _ = _scored_profiles(adata, label=label, use_rep=use_rep, control=control)
    labels = sub.obs[label].astype(str).to_numpy()
    compounds = sub.obs[compound].astype(str).to_numpy()
    sim = cosine_similarity(X)
    same_label = labels[:, None] == labels[None, :]
    pos = same_label & (compounds[:, None] != compounds[None, :])
    neg = ~same_label
    ap, n_pos, n_total = np.full(len(labels), np.nan), pos.sum(1), (pos | neg).sum(1)
    for i in range(len(labels)):
        cand = np.flatnonzero(pos[i] | neg[i])
        if not pos[i].any() or not neg[i].any():
            continue
        order = np.lexsort([~pos[i, cand], -sim[i, cand]])
        ap[i] = average_precision_ranks(pos[i, cand[order]].astype(float))
    table = pd.DataFrame({"label": labels, "compound": compounds, "average_precision": ap,
                          "n_pos_pairs": n_pos, "n_total_pairs": n_total}, index=sub.obs_names)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"), table


def loco_classification(adata: ad.AnnData, *, label: str = "moa", compound: str = "compound",
                        use_rep: str | None = None, control: str | None = None,
                        classifier: str = "centroid", random_state: int = 0) -> tuple[float, pd.DataFrame]:
    """Leave-one-compound-out classification of the label.

    For each compound, a classifier is trained on the profiles of every other compound and
    predicts the held-out compound's profiles. ``classifier``: ``"logistic"`` (multinomial
    logistic regression on L2-normalised profiles) or ``"centroid"`` (nearest label centroid,
    cosine). Profiles whose label no other compound has cannot be predicted and are left out
    (``predicted`` missing).

    Returns ``(accuracy over predictable profiles, table with label, compound, predicted)``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize as l2

    _column(adata, compound, "compound")
    sub, X, _ = _scored_profiles(adata, label=label, use_rep=use_rep, control=control)
    X = l2(X)
    labels = sub.obs[label].astype(str).to_numpy()
    compounds = sub.obs[compound].astype(str).to_numpy()
    predicted = np.full(len(labels), None, dtype=object)
    for held in np.unique(compounds):
        test = compounds == held
        train = ~test
        if labels[test][0] not in set(labels[train]):
            continue
        if classifier == "logistic":
            model = LogisticRegression(max_iter=2000, C=1.0, random_state=random_state)
            predicted[test] = model.fit(X[train], labels[train]).predict(X[test])
        elif classifier == "centroid":
            names = np.unique(labels[train])
            centroids = l2(np.stack([X[train][labels[train] == n].mean(0) for n in names]))
            predicted[test] = names[(X[test] @ centroids.T).argmax(1)]
        else:
            raise ValueError(f"classifier must be 'logistic' or 'centroid', got {classifier!r}")
    table = pd.DataFrame({"label": labels, "compound": compounds, "predicted": predicted}, index=sub.obs_names)
    scored = table["predicted"].notna()
    accuracy = float((table["predicted"][scored] == table["label"][scored]).mean()) if scored.any() else float("nan")
    return accuracy, table


# --------------------------------------------------------------------------- clustering


def cluster(adata: ad.AnnData, *, use_rep: str | None = None, n_pcs: int | None = 30, n_neighbors: int = 15,
            resolution: float = 1.0, umap: bool = True, random_state: int = 0,
            key_added: str = "leiden") -> None:
    """Cluster cells with scanpy: (PCA), kNN graph, Leiden, UMAP.

    ``use_rep``: an obsm key (e.g. ``"X_simclr"``) used as is; ``None`` = PCA of ``X`` with
    ``n_pcs`` components (``obsm["X_pca"]``, NaN features are set to 0 first).
    Writes ``obsm["X_pca"]`` (when computed), ``obsp["distances", "connectivities"]``,
    ``uns["neighbors"]``, ``obs[key_added]`` (categorical), ``obsm["X_umap"]`` when ``umap``,
    and ``uns["cellkit"]["cluster"]``. Results are fixed by ``random_state``.
    """
    import scanpy as sc

    if use_rep is None:
        X = np.nan_to_num(get_rep(adata, None).astype(np.float32))
        n = min(n_pcs or 50, X.shape[1] - 1, X.shape[0] - 1)
        adata.obsm["X_pca"] = sc.pp.pca(X, n_comps=n, random_state=random_state)
        rep = "X_pca"
    else:
        get_rep(adata, use_rep)
        rep = use_rep
    sc.pp.neighbors(adata, n_neighbors=n_neighbors, use_rep=rep, random_state=random_state)
    sc.tl.leiden(adata, resolution=resolution, random_state=random_state, key_added=key_added,
                 flavor="igraph", n_iterations=2, directed=False)
    if umap:
        sc.tl.umap(adata, random_state=random_state)
    _record(adata, "cluster", dict(use_rep=rep, n_neighbors=n_neighbors, resolution=resolution,
                                   random_state=random_state, key_added=key_added))


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


def __getattr__(name):
    # `ck.tl.robustness` lives in cellkit.robustness (imports torch): loaded on first use.
    if name == "robustness":
        from .robustness import robustness

        return robustness
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
