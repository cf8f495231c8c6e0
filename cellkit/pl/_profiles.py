"""Plots of profiles: embeddings coloured by metadata, counts, concentrations, confusion, channels."""

from __future__ import annotations

from typing import Sequence

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._figure import _finish, _palette


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
