"""Cut cells out of one field: nucleus centroids, crop windows, crops and masks (plain arrays)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..io.labels import label_centroids


def nucleus_centroids(nuclei: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels present in a nucleus label image and their centroids (`cellkit.io.labels.label_centroids`).

    Returns
    -------
    labels : (n,) int64, ascending
    centroids : (n, 2) float64, (y, x) in pixels
    """
    return label_centroids(nuclei)


def crop_origins(centroids: np.ndarray, size: int) -> np.ndarray:
    """Top-left corners (n, 2) int64 of ``size`` x ``size`` windows centred on ``centroids`` (n, 2)."""
    centre = np.floor(np.asarray(centroids, dtype=np.float64) + 0.5).astype(np.int64)
    return centre - size // 2


def touches_border(origins: np.ndarray, size: int, shape: tuple[int, int]) -> np.ndarray:
    """(n,) bool: the window at ``origins`` reaches outside an image of ``shape`` (H, W)."""
    origins = np.asarray(origins).reshape(-1, 2)
    return ((origins < 0) | (origins + size > np.asarray(shape))).any(axis=1)


def cut_crops(images: np.ndarray, nuclei: np.ndarray, cells: np.ndarray, labels: np.ndarray,
              origins: np.ndarray, size: int, *, mask_neighbors: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Crops and masks of the cells ``labels`` of one field, vectorized (no per-cell loop).

    Parameters
    ----------
    images
        (C, H, W) uint16 field.
    nuclei, cells
        (H, W) uint32 label images (nucleus k inside cell k).
    labels
        (n,) labels of the cells to cut.
    origins
        (n, 2) top-left corners of the windows; windows may reach outside the field, where
        the crop is zero and the masks are False.
    size
        Crop side S.
    mask_neighbors
        Set pixels that belong to another cell to 0 in the crop.

    Returns
    -------
    crops : (n, C, S, S) uint16
    masks : (n, 2, S, S) bool, nucleus and cell of the centre cell
    """
    labels = np.asarray(labels)
    n, c = len(labels), images.shape[0]
    if n == 0:
        return np.zeros((0, c, size, size), images.dtype), np.zeros((0, 2, size, size), bool)
    origins = np.asarray(origins, dtype=np.int64)
    outside = touches_border(origins, size, images.shape[1:])
    inner = np.flatnonzero(~outside)
    crops = np.zeros((n, c, size, size), images.dtype)
    crop_cells = np.zeros((n, size, size), cells.dtype)
    crop_nuclei = np.zeros((n, size, size), nuclei.dtype)
    if len(inner):  # windows inside the field: one vectorized gather
        ys, xs = origins[inner, 0], origins[inner, 1]
        crops[inner] = sliding_window_view(images, (size, size), axis=(1, 2))[:, ys, xs].swapaxes(0, 1)
        crop_cells[inner] = sliding_window_view(cells, (size, size))[ys, xs]
        crop_nuclei[inner] = sliding_window_view(nuclei, (size, size))[ys, xs]
    height, width = images.shape[1:]
    for i in np.flatnonzero(outside):  # the few windows leaving the field: the part inside, zeros elsewhere
        y, x = origins[i]
        y0, y1, x0, x1 = max(y, 0), min(y + size, height), max(x, 0), min(x + size, width)
        if y1 <= y0 or x1 <= x0:
            continue
        inside = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
        crops[(i, slice(None)) + inside] = images[:, y0:y1, x0:x1]
        crop_cells[(i,) + inside] = cells[y0:y1, x0:x1]
        crop_nuclei[(i,) + inside] = nuclei[y0:y1, x0:x1]
    own = labels[:, None, None]
    masks = np.stack([crop_nuclei == own, crop_cells == own], axis=1)
    if mask_neighbors:
        crops *= ~((crop_cells != 0) & (crop_cells != own))[:, None]
    return crops, masks
