"""Preprocessing of profiles, scanpy style: normalize against controls, select features, spherize.

Every function takes an AnnData first and keyword-only options, works on ``X`` or on an
``obsm`` key (``use_rep``), modifies ``adata`` in place unless ``copy=True`` (then returns
the modified copy), and records its parameters in ``uns["cellkit"][<function name>]``.
"""

from __future__ import annotations

import re
import warnings
from typing import Iterable, Sequence

import anndata as ad
import numpy as np

from .get import (  # noqa: F401  (ck.pp.get_rep, ck.pp.control_mask, ck.pp.ControlError stay)
    ControlError, _groups, _record, _set_rep, control_mask, get_rep,
)

MAD_TO_SD = 1.4826  # MAD of a normal distribution times this is its standard deviation

# CellProfiler bookkeeping measurements that describe where or which object, not what it looks like.
CELLPROFILER_BLOCKLIST = (
    r"_Location_", r"_AreaShape_Center_", r"_Number_Object_Number$", r"_ObjectNumber$", r"^ImageNumber$",
    r"_Parent_", r"_Children_.*_Count$", r"_AreaShape_Orientation$", r"_BoundingBox",
)


# --------------------------------------------------------------------------- normalize

IQR_TO_SD = 1.0 / 1.3490  # IQR of a normal distribution times this is its standard deviation


def interquartile_mean(X: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean of the values between the 25th and 75th percentiles (inclusive) along ``axis``, ignoring NaN.

    A trimmed mean (25 % cut on each side): as robust to outliers as the median, less noisy.
    Where no value lies between the quartiles (two values) it is their mean. All-NaN columns give NaN.
    """
    X = np.moveaxis(np.asarray(X, dtype=np.float64), axis, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        q1, q3 = np.nanpercentile(X, [25, 75], axis=0)
        inside = (X >= q1) & (X <= q3)
        total = np.where(inside, X, 0.0).sum(axis=0)
        count = inside.sum(axis=0)
        fallback = np.nanmean(X, axis=0)  # two values: none lies between the quartiles
    return np.where(count > 0, total / np.maximum(count, 1), fallback)


def normalize(adata: ad.AnnData, *, control: str | np.ndarray = "compound == 'DMSO'", by: str | None = "plate",
              method: str = "zscore", clip: float | None = None, use_rep: str | None = None,
              key_added: str | None = None, copy: bool = False) -> ad.AnnData | None:
    """Normalize each group (plate) against its control rows.

    ``method="zscore"``: ``(x - mean_ctrl) / sd_ctrl``; ``"robust"``: ``(x - median_ctrl) /
    (1.4826 * MAD_ctrl)``; ``"iqm"``: ``(x - IQM_ctrl) / (IQR_ctrl / 1.349)``, where the
    interquartile mean (`interquartile_mean`) is the mean of the control values between their
    quartiles and IQR / 1.349 estimates a normal SD; ``"center"``: ``x - mean_ctrl``. Statistics
    ignore NaN; NaN stays NaN.

    A feature whose control spread is 0 on a plate (constant controls) is not blown up: the
    robust scale falls back to the control SD, then to 1 (the feature is only centred). Such
    features are counted in ``uns["cellkit"]["normalize"]["zero_scale"]`` and a warning is
    issued; `feature_select` drops them when they carry no variance.

    Parameters
    ----------
    adata
        Profiles (cells or wells) x features.
    control
        Obs query or boolean mask selecting the control rows (e.g. DMSO wells).
    by
        Obs column defining the groups normalized separately (``None``: one group).
    method
        ``"zscore"``, ``"robust"``, ``"iqm"`` or ``"center"``.
    clip
        Clip the normalized values to ``[-clip, clip]`` (limits outlier features; None: no clipping).
    use_rep
        ``None`` for ``X``, else an ``obsm`` key.
    key_added
        Where to write (default: the slot read).
    copy
        Return a modified copy instead of changing ``adata``.

    Reads ``X`` / ``obsm[use_rep]``, ``obs[by]``; writes the same slot (or ``key_added``) as
    float32 and ``uns["cellkit"]["normalize"]``. Raises `ControlError` listing every group
    without control rows.
    """
    if method not in ("zscore", "robust", "iqm", "center"):
        raise ValueError(f"method must be 'zscore', 'robust', 'iqm' or 'center', got {method!r}")
    adata = adata.copy() if copy else adata
    X = get_rep(adata, use_rep).astype(np.float64)
    ctrl = control_mask(adata, control)
    groups = _groups(adata, by)
    lacking = [name for name, rows in groups if not ctrl[rows].any()]
    if lacking:
        raise ControlError(f"{len(lacking)} {by or 'group'}(s) have no control rows ({control!r}): {lacking[:20]}")
    out = np.empty_like(X)
    zero_scale = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        for _, rows in groups:
            ref = X[rows[ctrl[rows]]]
            if method in ("robust", "iqm"):
                if method == "robust":
                    center = np.nanmedian(ref, axis=0)
                    scale = MAD_TO_SD * np.nanmedian(np.abs(ref - center), axis=0)
                else:
                    center = interquartile_mean(ref)
                    q1, q3 = np.nanpercentile(ref, [25, 75], axis=0)
                    scale = IQR_TO_SD * (q3 - q1)
                sd = np.nanstd(ref, axis=0, ddof=1) if len(ref) > 1 else np.zeros_like(center)
                scale = np.where(scale > 0, scale, sd)
            else:
                center = np.nanmean(ref, axis=0)
                scale = np.nanstd(ref, axis=0, ddof=1) if len(ref) > 1 else np.zeros_like(center)
            if method == "center":
                scale = np.ones_like(center)
            bad = ~(scale > 1e-12 * np.maximum(np.abs(center), 1.0))
            zero_scale += int(bad.sum())
            scale = np.where(bad, 1.0, scale)
            out[rows] = (X[rows] - np.nan_to_num(center)) / scale
    if zero_scale:
        warnings.warn(f"normalize: {zero_scale} (group, feature) pairs have zero spread in the controls; "
                      "those features were centred but not scaled", RuntimeWarning, stacklevel=2)
    if clip is not None:
        out = np.clip(out, -clip, clip)
    _set_rep(adata, use_rep, key_added, out.astype(np.float32))
    _record(adata, "normalize", dict(control=control if isinstance(control, str) else "<mask>", by=by,
                                     method=method, clip=clip, use_rep=use_rep, key_added=key_added, zero_scale=zero_scale))
    return adata if copy else None


# --------------------------------------------------------------------------- feature selection

def _variance_flags(X: np.ndarray, freq_cut: float, unique_cut: float) -> np.ndarray:
    """pycytominer's near-zero-variance rule plus zero SD: True = drop."""
    n = X.shape[0]
    drop = np.zeros(X.shape[1], dtype=bool)
    for j in range(X.shape[1]):
        col = X[:, j]
        col = col[~np.isnan(col)]
        if col.size < 2 or np.nanstd(col) == 0:
            drop[j] = True
            continue
        values, counts = np.unique(col, return_counts=True)
        if len(values) / n < unique_cut:
            top = np.sort(counts)[::-1]
            drop[j] = top[1] / top[0] < freq_cut
    return drop


def _correlation_flags(X: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy de-correlation: visit features from the least to the most correlated on average;
    keep one unless its |Pearson r| with an already kept feature exceeds ``threshold``."""
    Z = X - np.nanmean(X, axis=0)
    Z = np.nan_to_num(Z)
    norms = np.linalg.norm(Z, axis=0)
    norms[norms == 0] = 1.0
    R = np.abs((Z / norms).T @ (Z / norms))
    np.fill_diagonal(R, 0.0)
    order = np.argsort(R.mean(axis=0), kind="stable")
    kept: list[int] = []
    drop = np.ones(X.shape[1], dtype=bool)
    for j in order:
        if not kept or R[j, kept].max() <= threshold:
            kept.append(j)
            drop[j] = False
    return drop


def feature_select(adata: ad.AnnData, *, operations: Sequence[str] = ("blocklist", "nan", "variance", "correlation"),
                   nan_cutoff: float = 0.05, freq_cut: float = 0.05, unique_cut: float = 0.01,
                   corr_threshold: float = 0.9, blocklist: Iterable[str] | None = CELLPROFILER_BLOCKLIST,
                   samples: str | np.ndarray | None = None, subset: bool = True,
                   copy: bool = False) -> ad.AnnData | None:
    """Drop uninformative features of ``X`` (pycytominer's ``feature_select`` rules).

    Operations, applied in the order given, each on the features the previous ones kept:

    - ``"blocklist"``: names matching any regular expression in ``blocklist``
      (default: CellProfiler location / object-number / parent-child bookkeeping);
    - ``"nan"``: more than ``nan_cutoff`` of the rows missing;
    - ``"variance"``: zero SD, or few unique values (``n_unique / n < unique_cut``) with the
      second most common value rarer than ``freq_cut`` times the most common one;
    - ``"correlation"``: greedy removal of features whose |Pearson r| with a kept feature
      exceeds ``corr_threshold`` (least-correlated features are kept first).

    Parameters
    ----------
    samples
        Obs query or mask of the rows the statistics are computed on (default: all rows).
    subset
        Subset ``adata`` to the kept features; else only annotate ``var``.

    Reads ``X``; writes ``var["feature_selected"]`` (bool), ``var["dropped_by"]`` (operation
    name or ``""``), subsets the variables when ``subset``, and ``uns["cellkit"]["feature_select"]``.
    """
    known = {"blocklist", "nan", "variance", "correlation"}
    unknown = [op for op in operations if op not in known]
    if unknown:
        raise ValueError(f"unknown feature_select operation(s) {unknown}; known: {sorted(known)}")
    adata = adata.copy() if copy else adata
    X = get_rep(adata, None).astype(np.float64)
    if samples is not None:
        X = X[control_mask(adata, samples)]
    dropped_by = np.array([""] * adata.n_vars, dtype=object)
    names = np.asarray(adata.var_names)
    for op in operations:
        live = np.flatnonzero(dropped_by == "")
        if not live.size:
            break
        if op == "blocklist":
            patterns = [re.compile(p) for p in (blocklist or [])]
            flags = np.array([any(p.search(str(names[j])) for p in patterns) for j in live], dtype=bool)
        elif op == "nan":
            flags = np.isnan(X[:, live]).mean(axis=0) > nan_cutoff
        elif op == "variance":
            flags = _variance_flags(X[:, live], freq_cut, unique_cut)
        else:
            flags = _correlation_flags(X[:, live], corr_threshold)
        dropped_by[live[flags]] = op
    keep = dropped_by == ""
    if not keep.any():
        raise ValueError("feature_select dropped every feature; loosen the cut-offs")
    adata.var["feature_selected"] = keep
    adata.var["dropped_by"] = dropped_by.astype(str)
    _record(adata, "feature_select", dict(operations=list(operations), nan_cutoff=nan_cutoff, freq_cut=freq_cut,
                                          unique_cut=unique_cut, corr_threshold=corr_threshold,
                                          n_kept=int(keep.sum()), n_input=int(adata.n_vars)))
    if subset:
        adata._inplace_subset_var(keep)
    return adata if copy else None


# --------------------------------------------------------------------------- row scaling

def l2_normalize(adata: ad.AnnData, *, use_rep: str | None = None, key_added: str | None = None,
                 copy: bool = False) -> ad.AnnData | None:
    """Scale each profile (row) to unit L2 norm.

    Before averaging wells into treatments this gives every well the same weight in the
    treatment's direction (the mean of unit vectors: a cosine consensus). Rows of zeros stay
    zero; NaN stays NaN. Reads and writes ``X`` / ``obsm[use_rep]`` (or ``key_added``);
    records ``uns["cellkit"]["l2_normalize"]``.
    """
    adata = adata.copy() if copy else adata
    X = get_rep(adata, use_rep).astype(np.float64)
    norms = np.sqrt(np.nansum(X * X, axis=1, keepdims=True))
    _set_rep(adata, use_rep, key_added, (X / np.where(norms > 0, norms, 1.0)).astype(np.float32))
    _record(adata, "l2_normalize", dict(use_rep=use_rep, key_added=key_added))
    return adata if copy else None


# --------------------------------------------------------------------------- spherize

def whitening_matrix(ref: np.ndarray, *, method: str = "zca", epsilon: float = 1e-6,
                     n_components: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centre and whitening transform fitted on reference rows ``ref`` (n, d).

    Returns ``(mean (d,), W (d, k))`` with ``whitened = (x - mean) @ W``. The control
    covariance ``C = U diag(s) U^T`` is regularised by ``epsilon`` times its mean eigenvalue:
    PCA whitening ``W = U diag(1/sqrt(s + e))`` (k = ``n_components`` or d), ZCA ``W = U
    diag(1/sqrt(s + e)) U^T`` (k = d).
    """
    mean = ref.mean(axis=0)
    Z = ref - mean
    cov = Z.T @ Z / max(len(ref) - 1, 1)
    s, U = np.linalg.eigh(cov)
    s, U = np.clip(s[::-1], 0, None), U[:, ::-1]
    U = U * np.where(U[np.abs(U).argmax(axis=0), np.arange(U.shape[1])] < 0, -1.0, 1.0)  # deterministic signs
    e = epsilon * max(float(s.mean()), np.finfo(float).tiny)
    scale = 1.0 / np.sqrt(s + e)
    if method == "pca":
        k = n_components or len(s)
        return mean, U[:, :k] * scale[:k]
    if method == "zca":
        return mean, (U * scale) @ U.T
    raise ValueError(f"method must be 'pca' or 'zca', got {method!r}")


def spherize(adata: ad.AnnData, *, control: str | np.ndarray = "compound == 'DMSO'", by: str | None = None,
             method: str = "zca", epsilon: float = 1e-6, n_components: int | None = None,
             use_rep: str | None = None, key_added: str | None = None, copy: bool = False) -> ad.AnnData | None:
    """Sphere the data on the controls (typical variation normalization, Ando et al. 2017).

    Fits `whitening_matrix` on the control rows (per ``by`` group, or once) so that the
    controls have identity covariance, and applies it to every row. ``method`` is ``"pca"``
    or ``"zca"``, optionally with ``"-cor"`` (scale each feature by its control SD first).
    ``epsilon`` (relative to the mean eigenvalue) regularises small eigenvalues; it matters when
    there are fewer controls than features.

    Reads ``X`` / ``obsm[use_rep]``, ``obs[by]``. Writes the same slot (ZCA; or PCA when
    ``n_components`` is None) or ``key_added`` (default ``"X_pca_sphere"`` for PCA with
    ``n_components``), and ``uns["cellkit"]["spherize"]``. NaN is not allowed (impute or
    select features first).
    """
    base, _, cor = method.partition("-")
    if base not in ("pca", "zca") or cor not in ("", "cor"):
        raise ValueError(f"method must be 'pca', 'zca', 'pca-cor' or 'zca-cor', got {method!r}")
    adata = adata.copy() if copy else adata
    X = get_rep(adata, use_rep).astype(np.float64)
    if np.isnan(X).any():
        raise ValueError(f"spherize: {int(np.isnan(X).any(axis=0).sum())} feature(s) contain NaN; "
                         "drop them (feature_select) or impute first")
    ctrl = control_mask(adata, control)
    groups = _groups(adata, by)
    lacking = [name for name, rows in groups if ctrl[rows].sum() < 2]
    if lacking:
        raise ControlError(f"spherize needs >= 2 control rows per {by or 'group'}; lacking: {lacking[:20]}")
    k = n_components if base == "pca" and n_components else X.shape[1]
    out = np.empty((X.shape[0], k))
    for _, rows in groups:
        ref = X[rows[ctrl[rows]]]
        sd = ref.std(axis=0, ddof=1) if cor else np.ones(X.shape[1])
        sd = np.where(sd > 0, sd, 1.0)
        mean, W = whitening_matrix(ref / sd, method=base, epsilon=epsilon, n_components=n_components)
        out[rows] = (X[rows] / sd - mean) @ W
    if key_added is None and k != X.shape[1]:
        key_added = "X_pca_sphere"
    _set_rep(adata, use_rep, key_added, out.astype(np.float32))
    _record(adata, "spherize", dict(control=control if isinstance(control, str) else "<mask>", by=by,
                                    method=method, epsilon=epsilon, n_components=n_components,
                                    use_rep=use_rep, key_added=key_added))
    return adata if copy else None


# --------------------------------------------------------------------------- reduce

def pca(adata: ad.AnnData, *, n_comps: int, use_rep: str | None = None, key_added: str | None = None,
        random_state: int = 0, copy: bool = False) -> ad.AnnData | None:
    """Principal components of the profiles (`scanpy.pp.pca` of the rows, centred, seeded).

    ``n_comps`` is clamped to ``min(n_obs, n_features) - 1`` (the most a centred PCA can give), and the
    number used is recorded; ``n_comps < 1`` is a ValueError. Reads ``X`` / ``obsm[use_rep]`` (no NaN);
    writes ``obsm[key_added]`` (default ``"X_pca"`` for ``X``, ``use_rep + "_pca"`` otherwise; float32,
    n_obs x components) and ``uns["cellkit"]["pca"]`` (n_comps asked and used, key, seed, scanpy version).
    """
    from importlib.metadata import version

    import scanpy as sc

    if isinstance(n_comps, bool) or not isinstance(n_comps, (int, np.integer)) or n_comps < 1:
        raise ValueError(f"pca: n_comps must be an integer >= 1, got {n_comps!r}")
    adata = adata.copy() if copy else adata
    X = get_rep(adata, use_rep).astype(np.float64)
    if np.isnan(X).any():
        raise ValueError(f"pca: {int(np.isnan(X).any(axis=0).sum())} feature(s) contain NaN; impute first")
    if min(X.shape) < 2:
        raise ValueError(f"pca needs at least 2 rows and 2 features, got {X.shape[0]} x {X.shape[1]}")
    k = int(min(n_comps, min(X.shape) - 1))
    key_added = key_added or ("X_pca" if use_rep is None else f"{use_rep}_pca")
    adata.obsm[key_added] = np.asarray(sc.pp.pca(X, n_comps=k, random_state=random_state), dtype=np.float32)
    _record(adata, "pca", dict(n_comps=k, n_comps_asked=int(n_comps), use_rep=use_rep, key_added=key_added,
                               random_state=random_state, scanpy_version=version("scanpy")))
    return adata if copy else None


# --------------------------------------------------------------------------- combine

def combine(adata: ad.AnnData, weights: dict[str | None, float], *, scale: str = "zscore",
            key_added: str = "X_combined", copy: bool = False) -> ad.AnnData | None:
    """Concatenate representations, each scaled and weighted, into ``obsm[key_added]``.

    ``weights`` maps a representation (``None`` or ``"X"`` for ``X``, else an ``obsm`` key) to its weight.
    ``scale="zscore"``: each feature z-scored over the rows (NaN -> 0; constant features dropped), each block
    times ``weight / sqrt(n_features)``: a block's share of the total variance is its weight squared.
    ``scale="norm"``: each block as it is (NaN -> 0), divided by its root-mean-square row length, times
    ``weight``; cosines within a block are untouched, so with the other weights -> 0 the first block's
    profiles come out unchanged (up to one factor). Writes ``obsm[key_added]`` float32 (n_obs, kept
    features) and ``uns["cellkit"]["combine"]`` (weights, scale, features kept per block). A later
    per-feature scaling (per-plate z-score, TVN) undoes the weights: combine prepared well profiles, as
    ``benchmarks/ssl_moa.py`` does.
    """
    if not weights or any(w < 0 for w in weights.values()):
        raise ValueError(f"weights must be a non-empty mapping of representation -> weight >= 0, got {weights}")
    if scale not in ("zscore", "norm"):
        raise ValueError(f"scale must be 'zscore' or 'norm', got {scale!r}")
    adata = adata.copy() if copy else adata
    blocks, kept = [], {}
    for rep, weight in weights.items():
        X = get_rep(adata, None if rep in (None, "X") else rep).astype(np.float64)
        if scale == "norm":
            X = np.nan_to_num(X, nan=0.0)
            rms = np.sqrt(np.mean(np.sum(X ** 2, axis=1)))
            kept[str(rep or "X")] = X.shape[1] if rms > 0 else 0
            if rms > 0:
                blocks.append(X * weight / rms)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            mean, sd = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
        keep = np.isfinite(sd) & (sd > 0)
        Z = np.nan_to_num((X[:, keep] - mean[keep]) / sd[keep], nan=0.0)
        kept[str(rep or "X")] = int(keep.sum())
        if keep.any():
            blocks.append(Z * weight / np.sqrt(keep.sum()))
    if not blocks:
        raise ValueError("every representation to combine is constant or empty")
    adata.obsm[key_added] = np.hstack(blocks).astype(np.float32)
    _record(adata, "combine", dict(weights={str(k or "X"): float(v) for k, v in weights.items()}, scale=scale,
                                   n_features=kept, key_added=key_added))
    return adata if copy else None


from ._pp_batch import combat, harmony, position_correct  # noqa: E402,F401  (batch and plate-position correction)
from ._pp_impute import impute  # noqa: E402,F401
