"""Plots, scanpy style: each function draws on matplotlib (Agg backend) and returns its Figure.

``show=True`` calls ``plt.show()`` (a no-op under Agg); ``save=PATH`` writes the figure
(any matplotlib format, by suffix). Figures are left open for the caller; close them with
``plt.close(fig)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "module://matplotlib_inline.backend_inline"):
    matplotlib.use("Agg")
import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _finish(fig, show: bool, save: str | os.PathLike | None, *, tight: bool = True):
    if tight:
        fig.tight_layout()
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=120)
    if show:
        plt.show()
    return fig


def _palette(values: pd.Series) -> dict:
    cats = sorted(values.dropna().astype(str).unique())
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
    return {c: cmap(i % cmap.N) for i, c in enumerate(cats)}


def umap(adata: ad.AnnData, *, color: Sequence[str] | str = ("moa", "compound", "plate"), basis: str = "X_umap",
         point_size: float | None = None, legend_max: int = 20, show: bool = False, save=None):
    """Scatter of ``obsm[basis]`` (default UMAP from `ck.tl.cluster`) coloured by each obs column in ``color``.

    Categorical columns get a legend (up to ``legend_max`` entries); numeric columns a colour bar.
    """
    if basis not in adata.obsm:
        raise KeyError(f"obsm has no {basis!r}; run ck.tl.cluster(adata) first (obsm keys: {list(adata.obsm.keys())})")
    color = [color] if isinstance(color, str) else list(color)
    missing = [c for c in color if c not in adata.obs]
    if missing:
        raise KeyError(f"obs has no column(s) {missing}; obs columns: {list(adata.obs.columns)}")
    xy = np.asarray(adata.obsm[basis])[:, :2]
    size = point_size or float(np.clip(3000 / max(adata.n_obs, 1), 1.0, 40.0))
    fig, axes = plt.subplots(1, len(color), figsize=(7.5 * len(color), 4.6), squeeze=False)
    for ax, col in zip(axes[0], color):
        values = adata.obs[col]
        if pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=size, cmap="viridis", linewidths=0)
            fig.colorbar(sc, ax=ax, shrink=0.8)
        else:
            pal = _palette(values)
            for name, c in pal.items():
                sel = (values.astype(str) == name).to_numpy()
                ax.scatter(xy[sel, 0], xy[sel, 1], color=c, s=size, linewidths=0, label=name)
            if len(pal) <= legend_max:
                legend = ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
                for handle in legend.legend_handles:
                    handle.set_sizes([25])
        ax.set_title(col)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{basis.removeprefix('X_').upper()}1")
        ax.set_ylabel(f"{basis.removeprefix('X_').upper()}2")
    return _finish(fig, show, save)


def _counts_bar(counts: pd.Series, title: str, xlabel: str, show, save):
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(counts) + 1)))
    ax.barh(counts.index.astype(str)[::-1], counts.to_numpy()[::-1], color="tab:blue")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _finish(fig, show, save)


def moa_distribution(adata: ad.AnnData, *, label: str = "moa", show: bool = False, save=None):
    """Horizontal bar chart of the number of rows (cells, wells or treatments) per label."""
    if label not in adata.obs:
        raise KeyError(f"obs has no {label!r} column")
    counts = adata.obs[label].astype(str).value_counts()
    return _counts_bar(counts, f"{label} distribution", "number of rows", show, save)


def compound_counts(adata: ad.AnnData, *, compound: str = "compound", top: int = 40, show: bool = False, save=None):
    """Bar chart of the ``top`` most frequent compounds."""
    if compound not in adata.obs:
        raise KeyError(f"obs has no {compound!r} column")
    counts = adata.obs[compound].astype(str).value_counts().head(top)
    return _counts_bar(counts, "compound counts", "number of rows", show, save)


def concentration_histogram(adata: ad.AnnData, *, concentration: str = "concentration", log: bool = True,
                            bins: int = 30, show: bool = False, save=None):
    """Histogram of concentrations (log10 scale by default; zero/controls left out and counted in the title)."""
    if concentration not in adata.obs:
        raise KeyError(f"obs has no {concentration!r} column")
    values = pd.to_numeric(adata.obs[concentration], errors="coerce").to_numpy(dtype=float)
    positive = values[np.isfinite(values) & (values > 0)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(np.log10(positive) if log else positive, bins=bins, color="tab:green")
    ax.set_xlabel(f"log10 {concentration}" if log else concentration)
    ax.set_ylabel("count")
    ax.set_title(f"concentrations ({len(values) - len(positive)} zero or missing not shown)")
    return _finish(fig, show, save)


def confusion_matrix(confusion: pd.DataFrame, *, normalize: bool = True, title: str = "MOA confusion",
                     show: bool = False, save=None):
    """Heat map of a confusion matrix (true rows x predicted columns), e.g. ``ck.tl.moa_accuracy(...).confusion()``.

    ``normalize`` divides each row by its total (rows with no entries stay 0); counts are written in the cells.
    """
    counts = confusion.to_numpy(dtype=float)
    shown = counts / np.maximum(counts.sum(1, keepdims=True), 1) if normalize else counts
    n = len(confusion)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * n, 0.8 + 0.45 * n))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(confusion.shape[1]), confusion.columns.astype(str), rotation=90, fontsize=7)
    ax.set_yticks(range(n), confusion.index.astype(str), fontsize=7)
    for i in range(n):
        for j in range(confusion.shape[1]):
            if counts[i, j]:
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if shown[i, j] > 0.6 * shown.max() else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.7)
    return _finish(fig, show, save)


def example_cells(cells: str | os.PathLike, *, groupby: str = "moa", groups: Sequence[str] | None = None,
                  obs: pd.DataFrame | None = None, n_per_group: int = 6, seed: int = 0,
                  show: bool = False, save=None):
    """Montage of example cells per group, read from a ``cells.zarr`` store.

    ``groupby`` is an obs column of the store, or of ``obs`` (a table with a ``crop_index``
    column, or one row per store cell in store order, e.g. a clustered cells AnnData's obs with
    ``leiden``). Up to ``n_per_group`` cells per group are drawn at random (seeded) and shown as
    RGB composites (`cellkit.plotting.montage_rgb` colours). Only the crops shown are read.
    """
    from .io.cells import open_cells, read_cells
    from .plotting import montage_rgb

    images, _, store_obs = read_cells(cells)
    channels = list(open_cells(cells).attrs["channels"])
    table = store_obs.reset_index(drop=True) if obs is None else obs.reset_index(drop=True)
    if "crop_index" in table:
        index = table["crop_index"].to_numpy(dtype=np.int64)
    elif len(table) == images.shape[0]:
        index = np.arange(len(table))
    else:
        raise ValueError("obs needs a crop_index column or one row per cell of the store")
    if groupby not in table:
        raise KeyError(f"{groupby!r} is neither a column of the store's obs nor of obs; columns: {list(table.columns)}")
    labels = table[groupby].astype(str).to_numpy()
    groups = list(groups) if groups is not None else sorted(set(labels))
    rng = np.random.default_rng(seed)
    picks = []
    for g in groups:
        members = index[labels == g]
        picks.append(np.sort(rng.choice(members, min(n_per_group, len(members)), replace=False)) if len(members) else [])
    fig, axes = plt.subplots(len(groups), n_per_group, figsize=(1.3 * n_per_group + 1.5, 1.3 * len(groups) + 0.3),
                             squeeze=False)
    for row, (g, chosen) in enumerate(zip(groups, picks)):
        crops = images[np.asarray(chosen, dtype=np.int64)].compute() if len(chosen) else []
        for col in range(n_per_group):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(crops):
                ax.imshow(montage_rgb(crops[col:col + 1], channels, gap=0))
        axes[row, 0].set_ylabel(g, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"example cells by {groupby}")
    return _finish(fig, show, save)


def channel_comparison(adata: ad.AnnData, *, channels: Sequence[str] = ("DNA", "Tubulin", "Actin"),
                       groupby: str = "moa", feature: str = "Intensity_MeanIntensity", compartment: str = "Cells",
                       show: bool = False, save=None):
    """Per-channel comparison across groups: one box plot panel per channel.

    Uses the ``X`` feature ``<compartment>_<feature>_<channel>`` (e.g.
    ``Cells_Intensity_MeanIntensity_Actin``) for each channel and draws its distribution per group.
    """
    if groupby not in adata.obs:
        raise KeyError(f"obs has no {groupby!r} column")
    names = [f"{compartment}_{feature}_{c}" for c in channels]
    missing = [n for n in names if n not in adata.var_names]
    if missing:
        raise KeyError(f"features {missing} are not in var_names")
    groups = sorted(adata.obs[groupby].astype(str).unique())
    labels = adata.obs[groupby].astype(str).to_numpy()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 0.25 * len(groups) + 2), squeeze=False)
    for ax, name, channel in zip(axes[0], names, channels):
        values = np.asarray(adata[:, name].X).ravel()
        data = [values[(labels == g) & np.isfinite(values)] for g in groups]
        ax.boxplot(data, vert=False, showfliers=False)
        ax.set_yticks(range(1, len(groups) + 1), groups if ax is axes[0, 0] else [""] * len(groups), fontsize=7)
        ax.set_title(channel)
        ax.set_xlabel(f"{compartment} {feature}")
    return _finish(fig, show, save)


# --------------------------------------------------------------------------- robustness


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
