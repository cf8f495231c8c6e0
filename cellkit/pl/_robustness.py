"""Plots of a `cellkit.tl.robustness` result: curves, similarity matrices, UMAP of clean vs perturbed."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ._figure import _finish

METRIC_LABELS = {
    "cosine_drift_mean": "mean cosine drift\n(1 - cos, clean vs perturbed)",
    "cosine_drift_median": "median cosine drift\n(1 - cos)",
    "l2_drift_mean": "mean L2 drift\n(embedding units)",
    "l2_drift_rel": "L2 drift / mean distance\nbetween clean cells",
    "knn_overlap": "kNN overlap\n(fraction of neighbours kept)",
    "nsc": "well-level NSC\n(fraction correct)",
    "delta_nsc": "change in well-level NSC\n(perturbed - clean)",
}


def robustness(result, *, metrics: Sequence[str] = ("cosine_drift_mean", "knn_overlap", "delta_nsc"),
               show: bool = False, save=None):
    """Robustness curves of a `ck.tl.robustness` result: one column per perturbation, one row per metric,
    one line per model. Each column's x axis is that perturbation's severity in its own unit
    (`cellkit.models.perturb.SEVERITY_UNITS`); x = 0 is the clean crop. Metrics that are NaN everywhere
    (e.g. no labels) are left out. Reads ``result.table``.
    """
    from ..models.perturb import SEVERITY_UNITS

    table = result.table if hasattr(result, "table") else result
    metrics = [m for m in metrics if m in table and table[m].notna().any()]
    perts = [p for p in table["perturbation"].unique() if p != "clean"]
    models = list(table["model"].unique())
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(len(metrics), len(perts), figsize=(3.2 * len(perts), 2.6 * len(metrics)),
                             squeeze=False, sharey="row")
    for col, p in enumerate(perts):
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            for i, m in enumerate(models):
                t = table[(table["model"] == m) & table["perturbation"].isin(["clean", p])].sort_values("severity")
                ax.plot(t["severity"], t[metric], marker="o", ms=3, color=cmap(i % 10), label=m)
            if row == 0:
                ax.set_title(p)
            if row == len(metrics) - 1:
                ax.set_xlabel(f"{SEVERITY_UNITS.get(p, 'severity')}\n(0 = clean)", fontsize=8)
            if col == 0:
                ax.set_ylabel(METRIC_LABELS.get(metric, metric.replace("_", " ")), fontsize=8)
            ax.grid(alpha=0.3)
    axes[0, -1].legend(title="model", fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    return _finish(fig, show, save)


def _robust_pick(result, model, perturbation, severity):
    conds = result.embeddings[model]
    levels = sorted(s for p, s in conds if p == perturbation)
    if not levels:
        raise KeyError(f"no perturbation {perturbation!r} in the result; have {sorted({p for p, _ in conds})}")
    severity = levels[-1] if severity is None else float(severity)
    if (perturbation, severity) not in conds:
        raise KeyError(f"{perturbation!r} was run at severities {levels}, not {severity}")
    return conds[("clean", 0.0)], conds[(perturbation, severity)], severity


def embedding_similarity(result, model: str, perturbation: str, *, severity: float | None = None,
                         groupby: str = "moa", n_cells: int = 60, center: bool = True, seed: int = 0,
                         show: bool = False, save=None):
    """Cosine-similarity matrices of ``n_cells`` cells (seeded sample, sorted by ``groupby`` when present):
    clean vs clean, and clean vs perturbed (default: the strongest severity), side by side.

    ``center``: subtract the mean clean embedding from both first (embeddings after a ReLU are all
    positive, and their raw cosine similarities all near 1).
    """
    clean, pert, severity = _robust_pick(result, model, perturbation, severity)
    if center:
        offset = clean.mean(axis=0)
        clean, pert = clean - offset, pert - offset
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(clean), min(n_cells, len(clean)), replace=False))
    if groupby in result.obs:
        labels = result.obs[groupby].astype(str).to_numpy()[pick]
        pick = pick[np.argsort(labels, kind="stable")]
    unit = lambda z: z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)  # noqa: E731
    a, b = unit(clean[pick]), unit(pert[pick])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    from ..models.perturb import SEVERITY_UNITS

    level = f"{SEVERITY_UNITS.get(perturbation, 'severity').split(' (')[0]} {severity:g}"
    for ax, mat, title in zip(axes, (a @ a.T, a @ b.T), ("clean vs clean", f"clean vs {perturbation} ({level})")):
        im = ax.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(f"{model}: {title}" + (" (centred)" if center else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel(f"cells (sorted by {groupby})" if groupby in result.obs else "cells")
    axes[0].set_xlabel("the same cells, clean")
    axes[1].set_xlabel("the same cells, perturbed")
    fig.colorbar(im, ax=axes, shrink=0.8, label="cosine similarity")
    return _finish(fig, show, save, tight=False)  # a colorbar shared by several axes


def robustness_umap(result, model: str, perturbation: str, *, n_cells: int = 500, seed: int = 0,
                    show: bool = False, save=None):
    """UMAP of clean and perturbed embeddings of one model (all severities of ``perturbation``), one
    joint embedding: points coloured by severity (0 = clean)."""
    import umap as umap_learn

    from ..models.perturb import SEVERITY_UNITS

    conds = result.embeddings[model]
    levels = [0.0] + sorted(s for p, s in conds if p == perturbation)
    if len(levels) == 1:
        raise KeyError(f"no perturbation {perturbation!r} in the result")
    rng = np.random.default_rng(seed)
    n = len(conds[("clean", 0.0)])
    pick = np.sort(rng.choice(n, min(n_cells, n), replace=False))
    z = np.concatenate([conds[("clean", 0.0)][pick]] + [conds[(perturbation, s)][pick] for s in levels[1:]])
    sev = np.repeat(levels, len(pick))
    xy = umap_learn.UMAP(n_neighbors=min(15, len(z) - 1), random_state=seed, n_jobs=1).fit_transform(z)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    cmap = plt.get_cmap("viridis")
    for i, s in enumerate(levels):
        sel = sev == s
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(i / max(len(levels) - 1, 1)), linewidths=0,
                   label="clean" if s == 0 else f"{s:g}")
    ax.legend(title=SEVERITY_UNITS.get(perturbation, f"{perturbation} severity"), fontsize=7, markerscale=2,
              frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_title(f"{model} embeddings: clean vs {perturbation} ({len(pick)} cells, one joint UMAP)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    return _finish(fig, show, save)


def _joint_coords(z: np.ndarray, basis: str, seed: int) -> np.ndarray:
    """2-D coordinates of the rows of ``z``: scanpy's t-SNE (``sc.tl.tsne``) or UMAP (umap-learn)."""
    if basis == "tsne":
        import anndata as ad
        import scanpy as sc

        tmp = ad.AnnData(obsm={"X_rep": z.astype(np.float32)}, obs=None, shape=(len(z), 0))
        sc.tl.tsne(tmp, use_rep="X_rep", perplexity=min(30.0, max(2.0, (len(z) - 1) / 3.0)), random_state=seed,
                   n_jobs=1)
        return tmp.obsm["X_tsne"]
    if basis == "umap":
        import umap as umap_learn

        return umap_learn.UMAP(n_neighbors=min(15, len(z) - 1), random_state=seed, n_jobs=1).fit_transform(z)
    raise ValueError(f"basis must be 'tsne' or 'umap', got {basis!r}")


def robustness_pairs(result, model: str, perturbation: str, *, severity: float | None = None,
                     basis: str = "tsne", n_cells: int = 300, seed: int = 0, show: bool = False, save=None):
    """Clean and perturbed embeddings of one model in one joint t-SNE (``sc.tl.tsne``) or UMAP, each
    clean point joined to its perturbed version by a line (default: the strongest severity).
    Long lines = rows the perturbation moved far."""
    clean, pert, severity = _robust_pick(result, model, perturbation, severity)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(clean), min(n_cells, len(clean)), replace=False))
    xy = _joint_coords(np.concatenate([clean[pick], pert[pick]]), basis, seed)
    a, b = xy[:len(pick)], xy[len(pick):]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(np.stack([a[:, 0], b[:, 0]]), np.stack([a[:, 1], b[:, 1]]), color="0.6", lw=0.6, zorder=1)
    ax.scatter(a[:, 0], a[:, 1], s=14, color="tab:blue", label="clean", zorder=2, linewidths=0)
    ax.scatter(b[:, 0], b[:, 1], s=14, color="tab:red", label=f"{perturbation} {severity:g}", zorder=2, linewidths=0)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(f"{model}: clean vs {perturbation} ({basis.upper() if basis == 'tsne' else 'UMAP'})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return _finish(fig, show, save)


def similarity_heatmap(adata, use_rep: str, *, groupby: str | None = None, labels: str | None = None,
                       center: bool = False, show: bool = False, save=None):
    """Cosine similarity (n, n) of the rows of ``adata.obsm[use_rep]`` (images or profiles), rows
    sorted by ``groupby`` when given, tick labels from obs column ``labels`` (default obs names when
    at most 60 rows). ``center``: subtract the mean row first."""
    from ..get import get_rep

    z = np.asarray(get_rep(adata, use_rep), np.float64)
    order = np.arange(len(z))
    if groupby is not None:
        order = np.argsort(adata.obs[groupby].astype(str).to_numpy(), kind="stable")
    z = z[order]
    if center:
        z = z - z.mean(axis=0)
    u = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    im = ax.imshow(u @ u.T, cmap="RdBu_r", vmin=-1, vmax=1)
    names = (adata.obs[labels].astype(str).to_numpy() if labels else np.asarray(adata.obs_names))[order]
    if len(names) <= 60:
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(f"cosine similarity of {use_rep}" + (" (centred)" if center else ""), fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _finish(fig, show, save)
