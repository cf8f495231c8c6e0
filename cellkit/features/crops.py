"""`measure_crops`: handcrafted morphology of the centre cell of single-cell crops (cells.zarr rows)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .measure import GROUPS, measure_field

# a crop shows one cell: no neighbours to count; granularity is a whole-field spectrum (background
# removal and subsampling over the field), which a crop cannot reproduce
CROP_GROUPS = tuple(g for g in GROUPS if g not in ("Neighbors", "Granularity"))


def measure_crops(images: np.ndarray, masks: np.ndarray, channels: list[str], *, groups=CROP_GROUPS,
                  **options) -> pd.DataFrame:
    """`measure_field` features of each crop's own cell.

    The crops are laid side by side in one mosaic (one background pixel between them), crop ``i``'s
    nucleus and cell masks becoming object ``i + 1``, and measured in one vectorised call.

    Parameters
    ----------
    images
        (B, C, S, S) uint16 counts or float (the same scale as uint16 counts).
    masks
        (B, 2, S, S) bool: nucleus, cell (cells.zarr ``masks``). The nucleus is clipped to the cell.
    channels
        C channel names.
    groups, options
        As `measure_field`; Neighbors (a crop holds one cell) and Granularity (a whole-field spectrum)
        are not measured.

    Returns
    -------
    DataFrame (B rows, in crop order, index 0..B-1) of float32 features; all NaN for a crop whose
    cell mask is empty.
    """
    images, masks = np.asarray(images), np.asarray(masks, dtype=bool)
    if images.ndim != 4 or masks.shape != (images.shape[0], 2) + images.shape[2:]:
        raise ValueError(f"images must be (B, C, S, S) and masks (B, 2, S, S); got {images.shape} and {masks.shape}")
    if "Neighbors" in groups:
        raise ValueError("Neighbors cannot be measured on crops: each crop holds one cell")
    if "Granularity" in groups:
        raise ValueError("Granularity cannot be measured on crops: it is a spectrum of the whole field")
    b, c, h, w = images.shape
    cols = max(1, math.ceil(math.sqrt(b)))
    rows = math.ceil(b / cols)
    dtype = np.float32 if np.issubdtype(images.dtype, np.floating) else images.dtype
    mosaic = np.zeros((c, rows * (h + 1), cols * (w + 1)), dtype)
    nuclei = np.zeros(mosaic.shape[1:], np.int64)
    cells = np.zeros(mosaic.shape[1:], np.int64)
    for i in range(b):
        y, x = (i // cols) * (h + 1), (i % cols) * (w + 1)
        mosaic[:, y:y + h, x:x + w] = images[i]
        cells[y:y + h, x:x + w] = np.where(masks[i, 1], i + 1, 0)
        nuclei[y:y + h, x:x + w] = np.where(masks[i, 0] & masks[i, 1], i + 1, 0)
    features = measure_field(mosaic, nuclei, cells, list(channels), groups=tuple(groups), **options)
    return features.reindex(np.arange(1, b + 1)).reset_index(drop=True)
