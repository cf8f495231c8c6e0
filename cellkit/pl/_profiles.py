"""Plots of profiles: embeddings coloured by metadata, counts, concentrations, confusion, channels."""

from __future__ import annotations

from typing import Sequence

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ._figure import PALETTE_SIZE, _finish, _palette, categories, row_kind


def _representation(adata: ad.AnnData, basis: str) -> str:
    """``"UMAP of the kNN graph on PCA of X (30 PCs)"``-like text from what `ck.tl.cluster` recorded."""
    name = basis.removeprefix("X_").upper().replace("TSNE", "t-SNE")
    record = adata.uns.get("cellkit", {}).get("cluster", {})
    rep = record.get("use_rep")
    if rep is None or record.get("umap_key", "X_umap") != basis:
        return name
    if rep == record.get("pca_key", "X_pca") and record.get("n_pcs") not in (None, "None"):
        return f"{name} of PCA of X ({record['n_pcs']} PCs)"
    return f"{name} of {rep}"


def umap(adata: ad.AnnData, *, color: Sequence[str] | str = ("moa", "compound", "plate"), basis: str = "X_umap",
         point_size: float | None = None, legend_max: int = PALETTE_SIZE, ncols: int = 2, title: str | None = None,
         show: bool = False, save=None):
    """Scatter of ``obsm[basis]`` (UMAP from `ck.tl.cluster`, or e.g. ``"X_tsne"``), one panel per obs column
    in ``color``, laid out in a grid of ``ncols`` columns.

    Categorical columns get a legend in natural order (clusters 0, 1, 2, ..., 10) up to ``legend_max``
    entries; beyond it a note says how many categories share the repeating colours. Numeric columns get a
    colour bar. The title names the representation (what `ck.tl.cluster` recorded) and the rows.
    Reads ``obsm[basis]``, ``obs[color]``, ``uns["cellkit"]["cluster"]``.
    """
    if basis not in adata.obsm:
        raise KeyError(f"obsm has no {basis!r}; run ck.tl.cluster(adata) first (obsm keys: {list(adata.obsm.keys())})")
    color = [color] if isinstance(color, str) else list(color)
    missing = [c for c in color if c not in adata.obs]
    if missing:
        raise KeyError(f"obs has no column(s) {missing}; obs columns: {list(adata.obs.columns)}")
    xy = np.asarray(adata.obsm[basis])[:, :2]
    size = point_size or float(np.clip(3000 / max(adata.n_obs, 1), 1.0, 40.0))
    ncols = max(1, min(ncols, len(color)))
    nrows = -(-len(color) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.6 * nrows + 0.5), squeeze=False)
    axis = _representation(adata, basis).split(" ")[0]
    for ax, col in zip(axes.flat, color):
        values = adata.obs[col]
        if pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=size, cmap="viridis", linewidths=0)
            fig.colorbar(sc, ax=ax, shrink=0.8, label=col)
        else:
            pal = _palette(values)
            for name, c in pal.items():
                sel = (values.astype(str) == name).to_numpy()
                ax.scatter(xy[sel, 0], xy[sel, 1], color=c, s=size, linewidths=0, label=name)
            if len(pal) <= legend_max:
                legend = ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False,
                                   ncols=1 if len(pal) <= 12 else 2, title=col, title_fontsize=8)
                for handle in legend.legend_handles:
                    handle.set_sizes([25])
            else:
                ax.text(1.02, 0.5, f"{len(pal)} {col} values:\ntoo many for a legend;\n"
                        f"{min(len(pal), PALETTE_SIZE)} colours repeat", transform=ax.transAxes, fontsize=7,
                        va="center")
        ax.set_title(f"coloured by {col}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{axis} 1")
        ax.set_ylabel(f"{axis} 2")
    for ax in list(axes.flat)[len(color):]:
        ax.set_visible(False)
    fig.suptitle(title or f"{_representation(adata, basis)}: {adata.n_obs} {row_kind(adata)}")
    return _finish(fig, show, save)


def _counts_bar(counts: pd.Series, title: str, xlabel: str, show, save):
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(counts) + 1)))
    ax.barh(counts.index.astype(str)[::-1], counts.to_numpy()[::-1], color="tab:blue")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _finish(fig, show, save)


def moa_distribution(adata: ad.AnnData, *, label: str = "moa", show: bool = False, save=None):
    """Horizontal bar chart of the number of rows (cells, wells or treatments: see the axis) per label.

    Reads ``obs[label]`` (and ``uns["cellkit"]["aggregate"]`` to name the rows)."""
    if label not in adata.obs:
        raise KeyError(f"obs has no {label!r} column")
    counts = adata.obs[label].astype(str).value_counts()
    rows = row_kind(adata)
    return _counts_bar(counts, f"{rows} per {label} ({adata.n_obs} {rows})", f"number of {rows}", show, save)


def compound_counts(adata: ad.AnnData, *, compound: str = "compound", top: int = 40, show: bool = False, save=None):
    """Bar chart of the ``top`` most frequent compounds (rows per compound). Reads ``obs[compound]``."""
    if compound not in adata.obs:
        raise KeyError(f"obs has no {compound!r} column")
    all_counts = adata.obs[compound].astype(str).value_counts()
    counts = all_counts.head(top)
    rows = row_kind(adata)
    shown = f"top {top} of {len(all_counts)} compounds" if len(all_counts) > top else f"{len(all_counts)} compounds"
    return _counts_bar(counts, f"{rows} per compound ({shown})", f"number of {rows}", show, save)


def concentration_histogram(adata: ad.AnnData, *, concentration: str = "concentration", unit: str = "µM",
                            log: bool = True, bins: int = 30, show: bool = False, save=None):
    """Histogram of concentrations (``unit``, log10 scale by default; zero/controls left out and counted in
    the title). Reads ``obs[concentration]``."""
    if concentration not in adata.obs:
        raise KeyError(f"obs has no {concentration!r} column")
    values = pd.to_numeric(adata.obs[concentration], errors="coerce").to_numpy(dtype=float)
    positive = values[np.isfinite(values) & (values > 0)]
    rows = row_kind(adata)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(np.log10(positive) if log else positive, bins=bins, color="tab:green")
    ax.set_xlabel(f"log10 {concentration} ({unit})" if log else f"{concentration} ({unit})")
    ax.set_ylabel(f"number of {rows}")
    ax.set_title(f"concentrations of {len(positive)} {rows} ({len(values) - len(positive)} at zero or missing, "
                 "e.g. controls, not shown)", fontsize=9)
    return _finish(fig, show, save)


def confusion_matrix(confusion: pd.DataFrame, *, normalize: bool = True, title: str = "MOA confusion",
                     show: bool = False, save=None):
    """Heat map of a confusion matrix (true rows x predicted columns), e.g. ``ck.tl.moa_accuracy(...).confusion()``.

    ``normalize`` divides each row by its total (rows with no entries stay 0; the colour is then the
    fraction of a true label's profiles predicted as each label); counts are written in the cells.
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
    ax.set_xlabel("predicted label (nearest neighbour's)")
    ax.set_ylabel("true label")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.7, label="fraction of the true label's profiles" if normalize else "profiles")
    return _finish(fig, show, save)


def channel_comparison(adata: ad.AnnData, *, channels: Sequence[str] = ("DNA", "Tubulin", "Actin"),
                       groupby: str = "moa", feature: str = "Intensity_MeanIntensity", compartment: str = "Cells",
                       unit: str = "intensity, counts / 65535", show: bool = False, save=None):
    """Per-channel comparison across groups: one box plot panel per channel (boxes: quartiles, whiskers:
    1.5 IQR, outliers not drawn).

    Uses the ``X`` feature ``<compartment>_<feature>_<channel>`` (e.g.
    ``Cells_Intensity_MeanIntensity_Actin``, on CellProfiler's scale ``unit`` unless the features were
    normalized) for each channel and draws its distribution per group (natural order). Reads ``X``,
    ``obs[groupby]``.
    """
    if groupby not in adata.obs:
        raise KeyError(f"obs has no {groupby!r} column")
    names = [f"{compartment}_{feature}_{c}" for c in channels]
    missing = [n for n in names if n not in adata.var_names]
    if missing:
        raise KeyError(f"features {missing} are not in var_names")
    groups = categories(adata.obs[groupby])
    labels = adata.obs[groupby].astype(str).to_numpy()
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 0.25 * len(groups) + 2), squeeze=False)
    for ax, name, channel in zip(axes[0], names, channels):
        values = np.asarray(adata[:, name].X).ravel()
        data = [values[(labels == g) & np.isfinite(values)] for g in groups]
        ax.boxplot(data, orientation="horizontal", showfliers=False)
        ax.set_yticks(range(1, len(groups) + 1), groups if ax is axes[0, 0] else [""] * len(groups), fontsize=7)
        ax.set_ylim(len(groups) + 0.5, 0.5)  # first group on top
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_title(f"{channel}: {feature.replace('_', ' ')} per {compartment.lower().rstrip('s')}", fontsize=9)
        ax.set_xlabel(f"{name} ({unit})", fontsize=8)
    return _finish(fig, show, save)
