"""Plots of a `cellkit.tl.robustness` result: curves, similarity matrices, UMAP of clean vs perturbed."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from ._figure import _finish


def robustness(result, *, metrics: Sequence[str] = ("cosine_drift_mean", "knn_overlap", "delta_nsc"),
               show: bool = False, save=None):
    """Robustness curves of a `ck.tl.robustness` result: one column per perturbation, one row per metric,
    one line per model (severity 0 = clean). Metrics that are NaN everywhere (e.g. no labels) are left out.
    """
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
                ax.set_xlabel("severity")
            if col == 0:
                ax.set_ylabel(metric.replace("_", " "))
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
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
    for ax, mat, title in zip(axes, (a @ a.T, a @ b.T), ("clean vs clean", f"clean vs {perturbation} {severity:g}")):
        im = ax.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(f"{model}: {title}" + (" (centred)" if center else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel(f"cells (sorted by {groupby})" if groupby in result.obs else "cells")
    fig.colorbar(im, ax=axes, shrink=0.8, label="cosine similarity")
    return _finish(fig, show, save, tight=False)  # a colorbar shared by several axes


def robustness_umap(result, model: str, perturbation: str, *, n_cells: int = 500, seed: int = 0,
                    show: bool = False, save=None):
    """UMAP of clean and perturbed embeddings of one model (all severities of ``perturbation``), one
    joint embedding: points coloured by severity (0 = clean)."""
    import umap as umap_learn

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
    ax.legend(title=f"{perturbation} severity", fontsize=7, markerscale=2, frameon=False,
              loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_title(f"{model}: clean vs {perturbation}")
    ax.set_xticks([])
    ax.set_yticks([])
    return _finish(fig, show, save)
