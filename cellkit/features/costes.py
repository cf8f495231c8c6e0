"""Costes-thresholded colocalization (CellProfiler MeasureColocalization, Costes' automatic threshold).

Per object, Costes' method fits the orthogonal (total least squares) regression line of the second
channel on the first over the pixels where either is non-zero, then looks for the highest
threshold pair (t, a t + b) on that line at which the pixels below either threshold have a
Pearson correlation <= 0; the coefficients are the fractions of each channel's intensity above its
threshold that lie where both channels are above theirs. The threshold search is CellProfiler's
default "Faster" bisection over the acquisition grid (1 / 65535 for 16-bit counts, 1 / 255 for
8-bit), step for step as cp_measure 0.3 does it; one numba pass runs it for every object.
"""

from __future__ import annotations

import numba
import numpy as np

from ._objects import Objects


@numba.njit(cache=True, nogil=True)
def _pearson_below(fi, si, thr_fi, thr_si):
    """Pearson r of the pixels with fi < thr_fi or si < thr_si; NaN for < 3 pixels or a constant channel."""
    n, sx, sy = 0, 0.0, 0.0
    lo_x, hi_x, lo_y, hi_y = np.inf, -np.inf, np.inf, -np.inf
    for k in range(fi.size):
        if fi[k] < thr_fi or si[k] < thr_si:
            n += 1
            sx += fi[k]
            sy += si[k]
            lo_x, hi_x = min(lo_x, fi[k]), max(hi_x, fi[k])
            lo_y, hi_y = min(lo_y, si[k]), max(hi_y, si[k])
    if n < 3 or hi_x == lo_x or hi_y == lo_y:
        return np.nan
    mx, my = sx / n, sy / n
    sxx, syy, sxy = 0.0, 0.0, 0.0
    for k in range(fi.size):
        if fi[k] < thr_fi or si[k] < thr_si:
            dx, dy = fi[k] - mx, si[k] - my
            sxx += dx * dx
            syy += dy * dy
            sxy += dx * dy
    return max(-1.0, min(1.0, sxy / np.sqrt(sxx * syy)))


@numba.njit(cache=True, nogil=True)
def _variance(values, mean):
    total = 0.0
    for v in values:
        total += (v - mean) * (v - mean)
    return total / (values.size - 1)


@numba.njit(cache=True, nogil=True)
def _costes_one(fi, si, scale):
    """(C1, C2) of one object's pixels fi, si (float64 in [0, 1]); NaN where Costes is undefined."""
    nan = (np.nan, np.nan)
    if fi.size < 3:
        return nan
    non_zero = (fi > 0) | (si > 0)
    fz, sz = fi[non_zero], si[non_zero]
    if fz.size < 3 or fz.max() == fz.min() or sz.max() == sz.min():
        return nan
    xmean, ymean = fz.mean(), sz.mean()
    xvar, yvar = _variance(fz, xmean), _variance(sz, ymean)
    z = fz + sz
    zvar = _variance(z, z.mean())
    covar = 0.5 * (zvar - (xvar + yvar))
    if abs(covar) <= 8 * np.finfo(np.float64).eps * max(xvar, yvar):
        return nan
    a = ((yvar - xvar) + np.sqrt((yvar - xvar) * (yvar - xvar) + 4 * (covar * covar))) / (2 * covar)
    b = ymean - a * xmean
    if not (np.isfinite(a) and np.isfinite(b)):
        return nan
    left, right = 1.0, float(scale)
    mid = ((right - left) // (6 / 5)) + left
    lastmid, valid, iterations = 0.0, -1.0, 0
    while lastmid != mid:
        iterations += 1
        if iterations > 256:
            return nan
        thr_fi = mid / scale
        r = _pearson_below(fi, si, thr_fi, a * thr_fi + b)
        if not np.isfinite(r) or r < 0:
            left = mid - 1
        else:
            right = mid + 1
            valid = mid
        lastmid = mid
        divisor = 6 / 5 if right - left > 6 else 2.0
        mid = ((right - left) // divisor) + left
    if valid < 0:
        return nan
    thr_fi = (valid - 1) / scale
    thr_si = a * thr_fi + b
    if not np.isfinite(_pearson_below(fi, si, thr_fi, thr_si)):
        return nan
    both, tot_fi, tot_si, both_fi, both_si = 0, 0.0, 0.0, 0.0, 0.0
    for k in range(fi.size):
        if fi[k] >= thr_fi:
            tot_fi += fi[k]
        if si[k] >= thr_si:
            tot_si += si[k]
        if fi[k] > thr_fi and si[k] > thr_si:
            both_fi += fi[k]
            both_si += si[k]
    if tot_fi <= 0 or tot_si <= 0:
        return nan
    return both_fi / tot_fi, both_si / tot_si


@numba.njit(cache=True, nogil=True)
def _costes_all(x, y, starts, counts, scale):
    out = np.full((starts.size, 2), np.nan)
    for i in range(starts.size):
        lo = starts[i]
        c1, c2 = _costes_one(x[lo:lo + counts[i]], y[lo:lo + counts[i]], scale)
        out[i, 0], out[i, 1] = c1, c2
    return out


def costes_features(objects: Objects, first: np.ndarray, second: np.ndarray, *, scale: int = 65535) -> dict[str, np.ndarray]:
    """Costes colocalization of two channels in every object.

    Parameters
    ----------
    objects
        The grouped pixels of one compartment.
    first, second
        (H, W) float intensities in [0, 1] (CellProfiler's scale; pixels NaN in either are left out).
    scale
        The acquisition grid the threshold is searched on: 65535 for 16-bit counts, 255 for 8-bit.

    Returns
    -------
    ``Correlation_Costes_{a}_{b}`` (C1: fraction of a's intensity above its Costes threshold that lies
    where b is above its threshold too) and ``Correlation_Costes_{b}_{a}`` (C2), (N,) float64; NaN
    where undefined (fewer than 3 non-zero pixels, a constant channel, no threshold found).
    """
    x = np.asarray(first, np.float64).ravel()[objects.flat]
    y = np.asarray(second, np.float64).ravel()[objects.flat]
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.all():
        objects = objects.subset(finite)
        x, y = x[finite], y[finite]
    out = _costes_all(x, y, objects.starts.astype(np.int64), objects.counts.astype(np.int64), int(scale))
    return {"Correlation_Costes_{a}_{b}": out[:, 0], "Correlation_Costes_{b}_{a}": out[:, 1]}
