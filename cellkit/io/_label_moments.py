"""Numba kernels of `cellkit.io.labels.label_centroids`: the largest label, then per-label pixel counts and
coordinate sums in one pass."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def label_max(labels):
    """The largest value of a non-empty (H, W) label image (as its dtype)."""
    top = labels[0, 0]
    height, width = labels.shape
    for y in range(height):
        for x in range(width):
            if labels[y, x] > top:
                top = labels[y, x]
    return top


@numba.njit(cache=True, nogil=True)
def label_sums(labels, n_bins):
    """Pixel count, sum of rows and sum of columns per label value of an (H, W) label image.

    The sums are accumulated as integers, so they are exact (below 2**53) and equal, as float64, to
    ``np.bincount`` over ``np.nonzero``'s pixels. Returns counts (n_bins,) int64, sum_y, sum_x (n_bins,) float64.
    """
    counts = np.zeros(n_bins, np.int64)
    sum_y = np.zeros(n_bins, np.int64)
    sum_x = np.zeros(n_bins, np.int64)
    height, width = labels.shape
    for y in range(height):
        for x in range(width):
            v = labels[y, x]
            if v != 0:
                counts[v] += 1
                sum_y[v] += y
                sum_x[v] += x
    return counts, sum_y.astype(np.float64), sum_x.astype(np.float64)
