"""Cut cells out of one field: nucleus centroids, crop windows, crops and masks (plain arrays)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def nucleus_centroids(nuclei: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels present in a nucleus label image and their centroids.

    Parameters
    ----------
    nuclei
        (H, W) integer label image, 0 = background.

    Returns
    -------
    labels : (n,) int64, ascending
    centroids : (n, 2) float64, (y, x) in pixels
    """
    nuclei = np.asarray(nuclei)
    ys, xs = np.nonzero(nuclei)  # foreground only: a fraction of the field
    if len(ys) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 2))
    values = nuclei[ys, xs]
    if int(values.max()) <= 4 * nuclei.size:  # dense label values: bincount directly
        labels, ids = None, values.astype(np.intp)
    else:  # sparse label values: relabel to 0..k first
        labels, ids = np.unique(values, return_inverse=True)
    counts = np.bincount(ids)
    sum_y, sum_x = np.bincount(ids, weights=ys), np.bincount(ids, weights=xs)
    if labels is None:
        labels = np.arange(len(counts))
    keep = counts > 0
    centroids = np.stack([sum_y[keep], sum_x[keep]], axis=1) / counts[keep, None]
    return labels[keep].astype(np.int64), centroids


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
    pad = 0
    if touches_border(origins, size, images.shape[1:]).any():
        pad = size
        images = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
        nuclei = np.pad(nuclei, pad)
        cells = np.pad(cells, pad)
    ys, xs = origins[:, 0] + pad, origins[:, 1] + pad
    crops = sliding_window_view(images, (size, size), axis=(1, 2))[:, ys, xs].swapaxes(0, 1)
    crop_cells = sliding_window_view(cells, (size, size))[ys, xs]
    crop_nuclei = sliding_window_view(nuclei, (size, size))[ys, xs]
    own = labels[:, None, None]
    masks = np.stack([crop_nuclei == own, crop_cells == own], axis=1)
    crops = np.ascontiguousarray(crops)
    if mask_neighbors:
        crops *= ~((crop_cells != 0) & (crop_cells != own))[:, None]
    return crops, masks
