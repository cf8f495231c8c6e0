"""Convex areas of labelled objects as `skimage.measure.regionprops` counts them (``area_convex``),
in one numba pass per object: no convex-hull image, no Qhull (`cellkit.segment.classical.diameter_from_mask`)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _cross(o, a, b):
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


@numba.njit(cache=True, nogil=True)
def _hull(p):
    """Convex hull (counter-clockwise, no repeated end) of (m, 2) int64 points sorted by row, then
    column (monotone chain)."""
    m = p.shape[0]
    hull = np.empty((2 * m, 2), np.int64)
    k = 0
    for i in range(m):
        while k >= 2 and _cross(hull[k - 2], hull[k - 1], p[i]) <= 0:
            k -= 1
        hull[k] = p[i]
        k += 1
    lower = k + 1
    for i in range(m - 2, -1, -1):
        while k >= lower and _cross(hull[k - 2], hull[k - 1], p[i]) <= 0:
            k -= 1
        hull[k] = p[i]
        k += 1
    return hull[:k - 1]


@numba.njit(cache=True, nogil=True)
def convex_areas(labels, stats, wanted):
    """Pixels of each ``wanted`` label's convex hull image, as `skimage.measure.regionprops`'
    ``area_convex`` counts them: the hull of the pixels' edge midpoints (diamond offsets), pixel
    centres inside or on it. ``stats``: OpenCV's per-label (x, y, width, height, area)."""
    out = np.zeros(wanted.size, np.int64)
    for w in range(wanted.size):
        k = wanted[w]
        x0, y0, width, height = stats[k, 0], stats[k, 1], stats[k, 2], stats[k, 3]
        # the pixels' edge midpoints in doubled coordinates: on even row 2r the row's extreme pixels
        # give (2r, 2 left - 1) and (2r, 2 right + 1); odd row 2r + 1 holds the bottom midpoints of
        # row r and the top ones of row r + 1, of which the extremes suffice for the hull. Emitted
        # in (row, column) order, two per doubled row.
        left = np.full(height, -1, np.int64)
        right = np.full(height, -1, np.int64)
        for r in range(height):
            for c in range(x0, x0 + width):
                if labels[y0 + r, c] == k:
                    if left[r] < 0:
                        left[r] = c
                    right[r] = c
        pts = np.empty((4 * height + 4, 2), np.int64)
        m = 0
        for y in range(2 * y0 - 1, 2 * (y0 + height) + 1):
            found, lo, hi = False, 0, 0
            if y % 2 == 0:
                r = y // 2 - y0
                if 0 <= r < height and left[r] >= 0:
                    found, lo, hi = True, 2 * left[r] - 1, 2 * right[r] + 1
            else:
                for r in ((y - 1) // 2 - y0, (y + 1) // 2 - y0):
                    if 0 <= r < height and left[r] >= 0:
                        lo = 2 * left[r] if not found else min(lo, 2 * left[r])
                        hi = 2 * right[r] if not found else max(hi, 2 * right[r])
                        found = True
            if found:
                pts[m, 0], pts[m, 1] = y, lo
                m += 1
                if hi != lo:
                    pts[m, 0], pts[m, 1] = y, hi
                    m += 1
        hull = _hull(pts[:m])
        nv = hull.shape[0]
        count = 0
        for r in range(y0, y0 + height):
            y = 2 * r
            lo, hi = np.inf, -np.inf
            for i in range(nv):
                a, b = hull[i], hull[(i + 1) % nv]
                if a[0] == y:
                    lo, hi = min(lo, a[1]), max(hi, a[1])
                if (a[0] - y) * (b[0] - y) < 0:
                    x = a[1] + (y - a[0]) * (b[1] - a[1]) / (b[0] - a[0])
                    lo, hi = min(lo, x), max(hi, x)
            if hi >= lo:
                count += int(np.floor(hi / 2 + 1e-9)) - int(np.ceil(lo / 2 - 1e-9)) + 1
        out[w] = count
    return out
