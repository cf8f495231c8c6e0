"""Correlation between two channels inside every object (CellProfiler MeasureColocalization):
Pearson correlation and slope, Manders coefficients and overlap with a threshold of a fraction of
each channel's per-object maximum."""

from __future__ import annotations

import numpy as np

from ._objects import Objects


def correlation_features(objects: Objects, first: np.ndarray, second: np.ndarray, *,
                         threshold: float = 0.15) -> dict[str, np.ndarray]:
    """Colocalisation features of two channels in every object.

    Parameters
    ----------
    objects
        The grouped pixels of one compartment.
    first, second
        (H, W) float64 intensities of the two channels (pixels NaN in either are left out).
    threshold
        Manders/overlap threshold as a fraction of each channel's maximum in the object
        (CellProfiler: 15 %).

    Returns
    -------
    dict with ``{a}``/``{b}`` placeholders for the channel names:
    ``Correlation_Correlation_{a}_{b}`` (Pearson), ``Correlation_Slope_{a}_{b}`` (least-squares
    slope of b on a), ``Correlation_Manders_{a}_{b}`` (M1: fraction of a above threshold where b is
    above threshold) and ``_{b}_{a}`` (M2), ``Correlation_Overlap_{a}_{b}``, ``Correlation_K_{a}_{b}``,
    ``Correlation_K_{b}_{a}``. NaN where undefined (a constant or all-zero channel, < 2 pixels).
    """
    x = first.ravel()[objects.flat]
    y = second.ravel()[objects.flat]
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.all():
        objects = objects.subset(finite)
        x, y = x[finite], y[finite]
    seg = objects.seg
    n = objects.counts.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = x - objects.mean(x)[seg]
        dy = y - objects.mean(y)[seg]
        sxx, syy, sxy = objects.sum(dx * dx), objects.sum(dy * dy), objects.sum(dx * dy)
        pearson = sxy / np.sqrt(sxx * syy)
        slope = sxy / sxx
        above_x = x >= threshold * objects.reduce(np.maximum, x)[seg]
        above_y = y >= threshold * objects.reduce(np.maximum, y)[seg]
        both = above_x & above_y
        m1 = objects.sum(np.where(both, x, 0)) / objects.sum(np.where(above_x, x, 0))
        m2 = objects.sum(np.where(both, y, 0)) / objects.sum(np.where(above_y, y, 0))
        xx, yy, xy = (objects.sum(np.where(both, v, 0)) for v in (x * x, y * y, x * y))
        overlap = xy / np.sqrt(xx * yy)
        k1, k2 = xy / xx, xy / yy
    small = n < 2
    out = {
        "Correlation_Correlation_{a}_{b}": pearson,
        "Correlation_Slope_{a}_{b}": slope,
        "Correlation_Manders_{a}_{b}": m1,
        "Correlation_Manders_{b}_{a}": m2,
        "Correlation_Overlap_{a}_{b}": overlap,
        "Correlation_K_{a}_{b}": k1,
        "Correlation_K_{b}_{a}": k2,
    }
    return {name: np.where(small, np.nan, value) for name, value in out.items()}
