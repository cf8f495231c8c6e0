"""Numba kernel of `cellkit.io.labels.label_centroids`: per-label pixel counts and coordinate sums in one pass."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def label_sums(labels, n_bins):
    """Pixel count, sum of rows and sum of columns per label value of an (H, W) label image.

    Sums run in raster order, as ``np.bincount`` over ``np.nonzero``'s pixels does, so the float
    results are bit-identical to it. Returns counts (n_bins,) int64, sum_y, sum_x (n_bins,) float64.
    """
    counts = np.zeros(n_bins, np.int64)
    sum_y = np.zeros(n_bins, np.float64)
    sum_x = np.zeros(n_bins, np.float64)
    height, width = labels.shape
    for y in range(height):
        for x in range(width):
            v = labels[y, x]
            if v != 0:
                counts[v] += 1
                sum_y[v] += y
                sum_x[v] += x
    return counts, sum_y, sum_x
