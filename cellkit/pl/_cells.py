"""Example cells from a cells.zarr: RGB montages (`montage_rgb`, `cell_montage`) and `example_cells` per group."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._figure import _finish

# RGB colour per channel name; other channels cycle through DEFAULT_COLORS.
CHANNEL_COLORS = {"DNA": (0.2, 0.4, 1.0), "Tubulin": (0.1, 1.0, 0.2), "Actin": (1.0, 0.2, 0.2)}
DEFAULT_COLORS = [(0.2, 0.4, 1.0), (0.1, 1.0, 0.2), (1.0, 0.2, 0.2), (1.0, 1.0, 0.2), (1.0, 0.2, 1.0)]


def _pick(obs, n: int, groupby: str | None, seed: int) -> tuple[np.ndarray, list[str]]:
    """Rows to show, sorted, and a title per row: up to ``n`` per group (or in all)."""
    rng = np.random.default_rng(seed)
    if groupby is None:
        rows = np.sort(rng.choice(len(obs), size=min(n, len(obs)), replace=False))
        return rows, [""] * len(rows)
    rows, titles = [], []
    for name, group in obs.reset_index(drop=True).groupby(groupby, sort=True, observed=True):
        chosen = np.sort(rng.choice(group.index.to_numpy(), size=min(n, len(group)), replace=False))
        rows.extend(chosen)
        titles.extend([str(name)] * len(chosen))
    return np.asarray(rows, dtype=np.int64), titles


def montage_rgb(crops: np.ndarray, channels: list[str], *, ncols: int = 8, percentiles=(1.0, 99.5),
                masks: np.ndarray | None = None, gap: int = 2) -> np.ndarray:
    """Tile crops into one RGB image.

    Parameters
    ----------
    crops
        (n, C, S, S) uint16.
    channels
        Channel names (colour per `CHANNEL_COLORS`).
    percentiles
        Per-channel intensity range over all crops, mapped to [0, 1].
    masks
        Optional (n, 2, S, S) bool; the cell outline is drawn in white.

    Returns
    -------
    (rows * (S + gap), ncols * (S + gap), 3) float32 in [0, 1].
    """
    crops = np.asarray(crops, dtype=np.float32)
    n, c, s, _ = crops.shape
    lo, hi = np.percentile(crops, percentiles, axis=(0, 2, 3)) if n else (np.zeros(c), np.ones(c))
    scaled = np.clip((crops - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None], 0, 1)
    colors = np.array([CHANNEL_COLORS.get(ch, DEFAULT_COLORS[k % len(DEFAULT_COLORS)])
                       for k, ch in enumerate(channels)], dtype=np.float32)
    rgb = np.clip(np.einsum("nchw,ck->nhwk", scaled, colors), 0, 1)
    if masks is not None:
        cell = np.asarray(masks)[:, 1]
        edge = cell & ~(np.roll(cell, 1, 1) & np.roll(cell, -1, 1) & np.roll(cell, 1, 2) & np.roll(cell, -1, 2))
        rgb[edge] = 1.0
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols) if n else 0
    tile = s + gap
    sheet = np.zeros((nrows * tile, ncols * tile, 3), np.float32)
    for k in range(n):
        r, q = divmod(k, ncols)
        sheet[r * tile:r * tile + s, q * tile:q * tile + s] = rgb[k]
    return sheet


def cell_montage(path: str | os.PathLike, *, n: int = 32, groupby: str | None = None, ncols: int = 8,
                 outlines: bool = False, seed: int = 0, ax=None):
    """Plot a montage of example cells of a complete cells.zarr.

    Parameters
    ----------
    path
        The cells.zarr.
    n
        Number of cells, or cells per group with ``groupby`` (an obs column such as ``"moa"``;
        one row of the montage per group).
    outlines
        Draw each cell's outline.
    seed
        Seed of the random choice of cells.
    ax
        Matplotlib axes to draw in; default: a new figure.

    Returns
    -------
    The matplotlib Figure.
    """
    from ..io.cells import open_cells, read_obs, read_rows

    root = open_cells(path)
    obs = read_obs(root)
    rows, titles = _pick(obs, n, groupby, seed)
    crops = read_rows(root["images"], rows)
    masks = read_rows(root["masks"], rows) if outlines else None
    if groupby is not None:
        ncols = max([titles.count(t) for t in set(titles)] or [1])
        # pad each group to a full row so that a row is a group
        order, padded_titles = [], []
        for t in dict.fromkeys(titles):
            members = [k for k, title in enumerate(titles) if title == t]
            order.extend(members + [-1] * (ncols - len(members)))
            padded_titles.append(t)
        blank = np.zeros((1,) + crops.shape[1:], crops.dtype)
        crops = np.concatenate([crops, blank])[order]
        masks = None if masks is None else np.concatenate([masks, np.zeros((1,) + masks.shape[1:], bool)])[order]
    sheet = montage_rgb(crops, list(root.attrs["channels"]), ncols=ncols, masks=masks)
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(2.0, sheet.shape[1] / 60), max(2.0, sheet.shape[0] / 60)))
    else:
        fig = ax.figure
    ax.imshow(sheet)
    ax.set_xticks([])
    if groupby is not None:
        tile = sheet.shape[0] / max(1, len(padded_titles))
        ax.set_yticks([(k + 0.5) * tile for k in range(len(padded_titles))], padded_titles)
    else:
        ax.set_yticks([])
    ax.set_title(f"{len(rows)} cells" + (f" by {groupby}" if groupby else ""))
    return fig


def example_cells(cells: str | os.PathLike, *, groupby: str = "moa", groups: Sequence[str] | None = None,
                  obs: pd.DataFrame | None = None, n_per_group: int = 6, seed: int = 0,
                  show: bool = False, save=None):
    """Montage of example cells per group, read from a ``cells.zarr`` store.

    ``groupby`` is an obs column of the store, or of ``obs`` (a table with a ``crop_index``
    column, or one row per store cell in store order, e.g. a clustered cells AnnData's obs with
    ``leiden``). Up to ``n_per_group`` cells per group are drawn at random (seeded) and shown as
    RGB composites (`montage_rgb` colours). Only the crops shown are read.
    """
    from ..io.cells import open_cells, read_cells

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
