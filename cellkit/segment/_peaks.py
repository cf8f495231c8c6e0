"""Seeds of the declumping watershed: `skimage.feature.peak_local_max` with ``labels`` in one numba pass.

Per labelled object, as scikit-image does it: the object's pixels (others set to the dtype's lowest
value) in its bounding box, a (2 d + 1)-square maximum filter ("nearest" border), pixels equal to it
and above the image's minimum are candidates (a plateau filling the whole object: the pixels an
opening removes); candidates in decreasing value (ties in raster order) are kept when no kept one
is closer than d (Chebyshev). The result is the same set of peaks; objects come in OpenCV's label
order, which changes only the numbering of the seeds (tests/test_segment_fast.py).
"""

from __future__ import annotations

import numba
import numpy as np

from ._fast import components


@numba.njit(cache=True, nogil=True)
def _box_max(img, d):
    """(h, w) maximum over the (2 d + 1)-square window clipped to the image (= "nearest" border)."""
    h, w = img.shape
    rows = np.empty_like(img)
    for r in range(h):
        for c in range(w):
            m = img[r, max(0, c - d)]
            for k in range(max(0, c - d) + 1, min(w, c + d + 1)):
                if img[r, k] > m:
                    m = img[r, k]
            rows[r, c] = m
    out = np.empty_like(img)
    for c in range(w):
        for r in range(h):
            m = rows[max(0, r - d), c]
            for k in range(max(0, r - d) + 1, min(h, r + d + 1)):
                if rows[k, c] > m:
                    m = rows[k, c]
            out[r, c] = m
    return out


@numba.njit(cache=True, nogil=True)
def _opened_away(mask):
    """Pixels of ``mask`` that a binary opening with the 3 x 3 cross (outside = 0) removes."""
    h, w = mask.shape
    eroded = np.zeros((h, w), np.bool_)
    for r in range(h):
        for c in range(w):
            eroded[r, c] = (mask[r, c] and r > 0 and mask[r - 1, c] and r < h - 1 and mask[r + 1, c]
                            and c > 0 and mask[r, c - 1] and c < w - 1 and mask[r, c + 1])
    out = np.zeros((h, w), np.bool_)
    for r in range(h):
        for c in range(w):
            opened = (eroded[r, c] or (r > 0 and eroded[r - 1, c]) or (r < h - 1 and eroded[r + 1, c])
                      or (c > 0 and eroded[r, c - 1]) or (c < w - 1 and eroded[r, c + 1]))
            out[r, c] = mask[r, c] and not opened
    return out


@numba.njit(cache=True, nogil=True)
def _object_peaks(image, labels, stats, d, threshold, low):
    capacity = 0
    for k in range(1, stats.shape[0]):
        capacity += stats[k, 4]
    peaks = np.empty((capacity, 2), np.int64)
    total = 0
    for k in range(1, stats.shape[0]):
        x0, y0, w, h = stats[k, 0], stats[k, 1], stats[k, 2], stats[k, 3]
        mask = np.empty((h, w), np.bool_)
        img = np.empty((h, w), image.dtype)
        for r in range(h):
            for c in range(w):
                mask[r, c] = labels[y0 + r, x0 + c] == k
                img[r, c] = image[y0 + r, x0 + c] if mask[r, c] else low
        top = _box_max(img, d)
        cand = np.zeros((h, w), np.bool_)
        trivial = True
        for r in range(h):
            for c in range(w):
                cand[r, c] = img[r, c] == top[r, c]
                if mask[r, c] and not cand[r, c]:
                    trivial = False
        if trivial:
            cand = _opened_away(mask)
        n = 0
        for r in range(h):
            for c in range(w):
                if cand[r, c] and img[r, c] > threshold:
                    n += 1
        ys = np.empty(n, np.int64)
        xs = np.empty(n, np.int64)
        vals = np.empty(n, np.float64)
        n = 0
        for r in range(h):
            for c in range(w):
                if cand[r, c] and img[r, c] > threshold:
                    ys[n], xs[n], vals[n] = r, c, -img[r, c]
                    n += 1
        order = np.argsort(vals, kind="mergesort")  # decreasing value, ties in raster order
        kept_y = np.empty(n, np.int64)
        kept_x = np.empty(n, np.int64)
        m = 0
        for i in order:
            ok = True
            if d > 1:
                for j in range(m):
                    if max(abs(ys[i] - kept_y[j]), abs(xs[i] - kept_x[j])) < d:
                        ok = False
                        break
            if ok:
                kept_y[m], kept_x[m] = ys[i], xs[i]
                m += 1
        for j in range(m):
            peaks[total, 0], peaks[total, 1] = y0 + kept_y[j], x0 + kept_x[j]
            total += 1
    return peaks[:total]


def object_peaks(image: np.ndarray, mask: np.ndarray, min_distance: int) -> np.ndarray:
    """(P, 2) int64 (row, col) of ``peak_local_max(image, min_distance=min_distance,
    labels=measure.label(mask), exclude_border=False)`` for an (H, W) float image and bool mask."""
    image = np.ascontiguousarray(image)
    if image.dtype.kind != "f":
        image = image.astype(np.float64)
    labels, stats = components(mask, connectivity=8)
    low = np.finfo(image.dtype).min
    return _object_peaks(image, labels, stats, int(min_distance), image.min(), low)
