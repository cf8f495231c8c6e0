"""Plate-map figure of a QC table (`cellkit.qc`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .qc import FLAGS

_LETTERS = {"blurry": "B", "saturated": "S", "empty": "E"}


def _well_grid(wells: pd.Series):
    rows = sorted({str(w)[0] for w in wells})
    cols = sorted({int(str(w)[1:]) for w in wells})
    return rows, cols


def plate_map(table: pd.DataFrame, *, value: str = "z_power_log_log_slope", vmax: float = 6.0):
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
    return fig
