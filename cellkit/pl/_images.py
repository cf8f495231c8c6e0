"""Figures of whole images: QC plate maps (`cellkit.qc`) and illumination fields (`cellkit.illumination`)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..qc import FLAGS
from ._figure import _finish

_LETTERS = {"blurry": "B", "saturated": "S", "empty": "E"}


def _well_grid(wells: pd.Series):
    rows = sorted({str(w)[0] for w in wells})
    cols = sorted({int(str(w)[1:]) for w in wells})
    return rows, cols


def qc_plate_map(table: pd.DataFrame, *, value: str = "z_power_log_log_slope", vmax: float = 6.0, show: bool = False,
                 save: str | os.PathLike | None = None):
    """One panel per plate (rows) and channel (columns): wells coloured by ``value`` (mean over
    sites; default the focus z-score), flagged wells lettered B (blurry), S (saturated), E (empty).

    ``table``: a flagged QC table (`cellkit.qc.qc_plate`). Returns a matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    plates = list(dict.fromkeys(table["plate"]))
    channels = list(dict.fromkeys(table["channel"]))
    rows, cols = _well_grid(table["well"])
    fig, axes = plt.subplots(len(plates), len(channels), squeeze=False,
                             figsize=(0.32 * len(cols) * len(channels) + 1.5, 0.32 * len(rows) * len(plates) + 1))
    image = None
    for i, plate in enumerate(plates):
        for j, ch in enumerate(channels):
            ax = axes[i, j]
            sub = table[(table.plate == plate) & (table.channel == ch)]
            grid = np.full((len(rows), len(cols)), np.nan)
            per_well = sub.groupby("well").agg({value: "mean", **{f: "any" for f in FLAGS}})
            for well, r in per_well.iterrows():
                y, x = rows.index(str(well)[0]), cols.index(int(str(well)[1:]))
                grid[y, x] = r[value]
                letters = "".join(_LETTERS[f] for f in FLAGS if r[f])
                if letters:
                    ax.text(x, y, letters, ha="center", va="center", fontsize=7, fontweight="bold", color="black")
            image = ax.imshow(grid, cmap="RdBu", vmin=-vmax, vmax=vmax)
            ax.set_xticks(range(len(cols)), [str(c) for c in cols], fontsize=6)
            ax.set_yticks(range(len(rows)), rows, fontsize=6)
            ax.set_title(f"{plate} / {ch}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label=f"{value}\nB blurry, S saturated, E empty")
    return _finish(fig, show, save, tight=False)


def illumination(fields: dict, channels, *, truth: dict | None = None, show: bool = False,
                 save: str | os.PathLike | None = None):
    """Flat fields ``{plate: (C, H, W)}`` (`cellkit.illumination`), one panel per plate (rows) and
    channel (columns), with contour lines; ``truth`` (same layout) adds its contours dashed."""
    import matplotlib.pyplot as plt

    plates = list(fields)
    fig, axes = plt.subplots(len(plates), len(channels), squeeze=False,
                             figsize=(3.2 * len(channels), 2.6 * len(plates)))
    for i, plate in enumerate(plates):
        for j, ch in enumerate(channels):
            ax, flat = axes[i, j], np.asarray(fields[plate][j])
            im = ax.imshow(flat, cmap="magma", vmin=min(0.6, float(flat.min())), vmax=max(1.2, float(flat.max())))
            levels = np.linspace(0.7, 1.15, 10)
            ax.contour(flat, levels=levels, colors="white", linewidths=0.6)
            if truth is not None:
                t = np.asarray(truth[plate][j])
                ax.contour(t / t.mean(), levels=levels, colors="cyan", linewidths=0.6, linestyles="dashed")
            ax.set_title(f"{plate} / {ch}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
            fig.colorbar(im, ax=ax, shrink=0.8)
    return _finish(fig, show, save)
