"""Example cells from a cells.zarr: one montage path (`example_cells`; `cell_montage` is its short form),
RGB composites with one intensity scale per channel shared by every cell shown (`montage_rgb`)."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from ._figure import _finish, categories

# RGB colour per channel name; other channels cycle through DEFAULT_COLORS.
CHANNEL_COLORS = {"DNA": (0.2, 0.4, 1.0), "Tubulin": (0.1, 1.0, 0.2), "Actin": (1.0, 0.2, 0.2)}
DEFAULT_COLORS = [(0.2, 0.4, 1.0), (0.1, 1.0, 0.2), (1.0, 0.2, 0.2), (1.0, 1.0, 0.2), (1.0, 0.2, 1.0)]
COLOR_NAMES = {(0.2, 0.4, 1.0): "blue", (0.1, 1.0, 0.2): "green", (1.0, 0.2, 0.2): "red", (1.0, 1.0, 0.2): "yellow",
               (1.0, 0.2, 1.0): "magenta"}


def channel_colors(channels: Sequence[str]) -> list[tuple[float, float, float]]:
    """The RGB colour of each channel (`CHANNEL_COLORS`, else `DEFAULT_COLORS` by position)."""
    return [CHANNEL_COLORS.get(ch, DEFAULT_COLORS[k % len(DEFAULT_COLORS)]) for k, ch in enumerate(channels)]


def channel_limits(crops: np.ndarray, percentiles=(1.0, 99.5)) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel intensity range ``(lo (C,), hi (C,))``: the ``percentiles`` over all pixels of all ``crops``
    (n, C, S, S), so every crop shown is on the same scale per channel."""
    crops = np.asarray(crops, dtype=np.float32)
    if not len(crops):
        return np.zeros(crops.shape[1]), np.ones(crops.shape[1])
    lo, hi = np.percentile(crops, percentiles, axis=(0, 2, 3))
    return lo, hi


def montage_rgb(crops: np.ndarray, channels: list[str], *, ncols: int = 8, percentiles=(1.0, 99.5),
                masks: np.ndarray | None = None, gap: int = 2, limits=None) -> np.ndarray:
    """Tile crops into one RGB image.

    Parameters
    ----------
    crops
        (n, C, S, S) uint16 (or float).
    channels
        Channel names (colour per `CHANNEL_COLORS`).
    percentiles
        Per-channel intensity range over all crops (`channel_limits`), mapped to [0, 1]; or ``limits``.
    masks
        Optional (n, 2, S, S) bool; the cell outline is drawn in white.
    limits
        ``(lo (C,), hi (C,))`` to use instead of the crops' own percentiles.

    Returns
    -------
    (rows * (S + gap), ncols * (S + gap), 3) float32 in [0, 1].
    """
    crops = np.asarray(crops, dtype=np.float32)
    n, c, s, _ = crops.shape
    lo, hi = limits if limits is not None else channel_limits(crops, percentiles)
    lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    scaled = np.clip((crops - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None], 0, 1)
    colors = np.array(channel_colors(channels), dtype=np.float32)
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


def _store_rows(table: pd.DataFrame, n_store: int) -> np.ndarray:
    if "crop_index" in table:
        return table["crop_index"].to_numpy(dtype=np.int64)
    if len(table) == n_store:
        return np.arange(n_store)
    raise ValueError("obs needs a crop_index column or one row per cell of the store")


def _scale_bar(ax, crop_px: int, pixel_size: float | None):
    """A white bar in the first tile: about a third of a crop, in µm when the pixel size is known."""
    if pixel_size:
        target = crop_px * pixel_size / 3
        length_um = next(v for v in (100, 50, 20, 10, 5, 2, 1, 0.5) if v <= target or v == 0.5)
        length, text = length_um / pixel_size, f"{length_um:g} µm"
    else:
        length = max(1, round(crop_px / 3 / 5) * 5)
        text = f"{length} px"
    y = crop_px - max(2, crop_px // 12)
    ax.plot([2, 2 + length], [y, y], color="white", lw=2, solid_capstyle="butt")
    ax.text(2 + length / 2, y - 1.5, text, color="white", fontsize=6, ha="center", va="bottom")


def example_cells(cells: str | os.PathLike, *, groupby: str | None = "moa", groups: Sequence[str] | None = None,
                  obs: pd.DataFrame | None = None, n_per_group: int = 6, ncols: int | None = None,
                  outlines: bool = False, pixel_size: float | None = None, percentiles=(1.0, 99.5), seed: int = 0,
                  ax=None, show: bool = False, save=None):
    """Montage of example cells per group from a ``cells.zarr`` store: one row per group.

    ``groupby`` is an obs column of the store, or of ``obs`` (a table with a ``crop_index`` column, or one
    row per store cell in store order, e.g. a clustered cells AnnData's obs with ``leiden``); groups in
    natural order (clusters 0, 1, 2, ..., 10). ``groupby=None``: ``n_per_group`` cells in rows of
    ``ncols``. Up to ``n_per_group`` cells per group are drawn at random (seeded); only those crops are read.

    Each channel is drawn in its colour (`CHANNEL_COLORS`, key below the montage) on ONE intensity scale
    shared by all the cells shown (``percentiles`` of their pixels), so brightness can be compared across
    cells and groups. A scale bar is drawn in the first cell: in µm when ``pixel_size`` (µm per pixel, or
    the store's ``pixel_size_um`` attribute) is known, else in pixels. ``outlines`` draws each cell's
    outline. Reads the store's ``images`` (only the crops shown), ``masks`` (with ``outlines``), ``obs`` and
    attributes (``channels``, ``pixel_size_um``); writes nothing. Returns the Figure (one image axes).
    """
    from ..io.cells import open_cells, read_obs, read_rows

    root = open_cells(cells)
    channels = list(root.attrs["channels"])
    pixel_size = pixel_size or root.attrs.get("pixel_size_um")
    n_store = root["images"].shape[0]
    table = (read_obs(root) if obs is None else obs).reset_index(drop=True)
    index = _store_rows(table, n_store)
    rng = np.random.default_rng(seed)
    if groupby is None:
        chosen = np.sort(rng.choice(index, min(n_per_group, len(index)), replace=False))
        ncols = ncols or min(8, max(1, len(chosen)))
        order, names = list(chosen), []
    else:
        if groupby not in table:
            raise KeyError(f"{groupby!r} is neither a column of the store's obs nor of obs; "
                           f"columns: {list(table.columns)}")
        labels = table[groupby].astype(str).to_numpy()
        names = list(groups) if groups is not None else categories(table[groupby])
        ncols = n_per_group
        order = []
        for g in names:
            members = index[labels == g]
            picked = np.sort(rng.choice(members, min(n_per_group, len(members)), replace=False)) if len(members) else []
            order += list(picked) + [-1] * (n_per_group - len(picked))  # a row is a group
    order = np.asarray(order, dtype=np.int64)
    real = order[order >= 0]
    crops = read_rows(root["images"], real)
    limits = channel_limits(crops, percentiles)  # shared by every cell shown
    full = np.zeros((len(order),) + tuple(root["images"].shape[1:]), crops.dtype)
    full[order >= 0] = crops
    masks = None
    if outlines:
        masks = np.zeros((len(order),) + tuple(root["masks"].shape[1:]), bool)
        masks[order >= 0] = read_rows(root["masks"], real)
    sheet = montage_rgb(full, channels, ncols=ncols, masks=masks, limits=limits)
    size = full.shape[-1]
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(3.0, sheet.shape[1] / 55 + 1.6), max(2.4, sheet.shape[0] / 55 + 1.2)))
    else:
        fig = ax.figure
    ax.imshow(sheet)
    ax.set_xticks([])
    tile = sheet.shape[0] / max(1, -(-len(order) // ncols))
    if names:
        ax.set_yticks([(k + 0.5) * tile for k in range(len(names))], names, fontsize=8)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if len(real):
        _scale_bar(ax, size, pixel_size)
    handles = [Patch(color=c, label=f"{ch} ({COLOR_NAMES.get(tuple(c), 'colour')})")
               for ch, c in zip(channels, channel_colors(channels))]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=len(handles), fontsize=7,
              frameon=False, title=f"channels; one scale per channel for all cells "
                                   f"({percentiles[0]:g}-{percentiles[1]:g} percentile)", title_fontsize=7)
    what = f"{len(real)} example cells" + (f" by {groupby}" if groupby else "")
    ax.set_title(what, fontsize=10)
    return _finish(fig, show, save)


def cell_montage(path: str | os.PathLike, *, n: int = 32, groupby: str | None = None, ncols: int = 8,
                 outlines: bool = False, seed: int = 0, ax=None):
    """`example_cells` of a complete cells.zarr: ``n`` cells (rows of ``ncols``), or ``n`` per group with
    ``groupby`` (one row per group). Returns the Figure."""
    return example_cells(path, groupby=groupby, n_per_group=n, ncols=ncols, outlines=outlines, seed=seed, ax=ax)
