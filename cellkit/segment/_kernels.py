"""Numba kernels of the classical segmenter: one pass over the pixels where numpy needs a sort.

- `raster_table`: the 1..N numbering of labels in raster order of their first pixel (what
  `np.unique(..., return_index=True)` gave, without sorting the image).
- `label_max`: per-label maximum (`scipy.ndimage.maximum`).
- `threshold_li`: Li's iterative minimum cross-entropy threshold (`skimage.filters.threshold_li`),
  each iteration one pass in float64.
- `order_stats`: exact order statistics (percentiles, medians) from a histogram and a small sort.
- `nearest_within`: `skimage.segmentation.expand_labels` from OpenCV's nearest-seed map.
- `label_otsu` / `otsu_of`: Otsu's threshold of each label's pixels / of an array, as
  `skimage.filters.threshold_otsu` computes it (256 bins over the values' range, `numpy.histogram`'s
  binning).
- `robust_std`: the clipped standard deviation of `cellkit.segment.empty` (exact percentiles).
- `lookup`, `label_boxes`, `kept_raster_table`, `paired_labels`: table lookups, per-label boxes and
  the relabelling of `pair_nuclei_cells`, one pass each.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def raster_table(flat, n):
    """(n + 1,) uint32: label v -> its rank among the labels of ``flat`` (1-D, values 0..n) in order
    of first appearance; 0 for 0 and for absent labels."""
    table = np.zeros(n + 1, np.uint32)
    k = 0
    for i in range(flat.size):
        v = flat[i]
        if v > 0 and table[v] == 0:
            k += 1
            table[v] = k
    return table


@numba.njit(cache=True, nogil=True)
def kept_raster_table(flat, keep):
    """`raster_table` of the labels v of ``flat`` with ``keep[v]`` (the others map to 0)."""
    table = np.zeros(keep.size, np.uint32)
    k = 0
    for i in range(flat.size):
        v = flat[i]
        if v > 0 and keep[v] and table[v] == 0:
            k += 1
            table[v] = k
    return table


@numba.njit(cache=True, nogil=True)
def paired_labels(nuclei, cells, nucleus_table, cell_table):
    """(cell_table[cells], nucleus_table[nuclei] where it equals the new cell label, else 0), 1-D uint32."""
    new_nuclei = np.empty(nuclei.size, np.uint32)
    new_cells = np.empty(cells.size, np.uint32)
    for i in range(cells.size):
        c = cell_table[cells[i]]
        n = nucleus_table[nuclei[i]]
        new_cells[i] = c
        new_nuclei[i] = n if n == c else 0
    return new_nuclei, new_cells


@numba.njit(cache=True, nogil=True)
def apply_table(flat, table):
    """``table[flat]`` as uint32 (1-D)."""
    out = np.empty(flat.size, np.uint32)
    for i in range(flat.size):
        out[i] = table[flat[i]]
    return out


@numba.njit(cache=True, nogil=True)
def lookup(labels, table):
    """``table[labels]`` for (H, W) labels (one pass, no index array)."""
    h, w = labels.shape
    out = np.empty((h, w), table.dtype)
    for r in range(h):
        for c in range(w):
            out[r, c] = table[labels[r, c]]
    return out


@numba.njit(cache=True, nogil=True)
def label_boxes(labels, n):
    """(n + 1, 5) int32 per label 1..n of (H, W) ``labels``: x, y, width, height, area (OpenCV's
    ``connectedComponentsWithStats`` layout; row 0, the background, and absent labels: zeros)."""
    h, w = labels.shape
    lo_r = np.full(n + 1, h, np.int64)
    hi_r = np.full(n + 1, -1, np.int64)
    lo_c = np.full(n + 1, w, np.int64)
    hi_c = np.full(n + 1, -1, np.int64)
    area = np.zeros(n + 1, np.int64)
    for r in range(h):
        for c in range(w):
            k = labels[r, c]
            if k == 0:
                continue
            area[k] += 1
            if r < lo_r[k]:
                lo_r[k] = r
            hi_r[k] = r
            if c < lo_c[k]:
                lo_c[k] = c
            if c > hi_c[k]:
                hi_c[k] = c
    out = np.zeros((n + 1, 5), np.int32)
    for k in range(n + 1):
        if area[k]:
            out[k, 0], out[k, 1] = lo_c[k], lo_r[k]
            out[k, 2], out[k, 3], out[k, 4] = hi_c[k] - lo_c[k] + 1, hi_r[k] - lo_r[k] + 1, area[k]
    return out


@numba.njit(cache=True, nogil=True)
def label_max(values, labels, n):
    """(n,) float64 maximum of ``values`` over labels 1..n (both 1-D); absent labels: 0."""
    peak = np.full(n + 1, -np.inf)
    for i in range(labels.size):
        v = labels[i]
        if v > 0 and values[i] > peak[v]:
            peak[v] = values[i]
    out = peak[1:].copy()
    for j in range(n):
        if out[j] == -np.inf:
            out[j] = 0.0
    return out


@numba.njit(cache=True, nogil=True)
def _means_around(values, t):
    """Means of the values above ``t`` and of the others (0 for an empty side)."""
    above, n_above, below, n_below = 0.0, 0, 0.0, 0
    for i in range(values.size):
        v = values[i]
        if v > t:
            above += v
            n_above += 1
        else:
            below += v
            n_below += 1
    return above / max(n_above, 1), below / max(n_below, 1)


@numba.njit(cache=True, nogil=True)
def threshold_li(values, tolerance, initial=np.nan, max_iter=10_000):
    """Li's threshold of finite ``values`` (1-D float, not all equal), iterated from ``initial`` (NaN:
    the mean, as skimage) until it moves by at most ``tolerance`` (skimage's iteration; sums in float64)."""
    low = values.min()
    if np.isnan(initial):
        mean = 0.0
        for i in range(values.size):
            mean += values[i]
        t_next = mean / values.size - low
    else:
        t_next = initial - low
    t_curr = -2.0 * tolerance
    for _ in range(max_iter):
        if abs(t_next - t_curr) <= tolerance:
            break
        t_curr = t_next
        fore, back = _means_around(values, t_curr + low)
        fore, back = fore - low, back - low
        if back == 0.0:
            break
        t_next = (back - fore) / (np.log(back) - np.log(fore))
    return t_next + low


@numba.njit(cache=True, nogil=True)
def otsu_of(values, nbins):
    lo, hi = values.min(), values.max()
    if lo == hi:
        return lo
    counts = np.zeros(nbins, np.float64)
    norm = nbins / (hi - lo)
    edges = np.empty(nbins + 1)
    for b in range(nbins + 1):  # numpy.linspace(lo, hi, nbins + 1)
        edges[b] = lo + b * ((hi - lo) / nbins)
    edges[nbins] = hi
    for v in values:
        k = int((v - lo) * norm)
        if k == nbins:
            k -= 1
        if v < edges[k]:
            k -= 1
        elif v >= edges[k + 1] and k != nbins - 1:
            k += 1
        counts[k] += 1
    centres = (edges[:-1] + edges[1:]) / 2
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * centres) / weight1
    mean2 = (np.cumsum((counts * centres)[::-1]) / weight2[::-1])[::-1]
    best, best_k = -1.0, 0
    for k in range(nbins - 1):
        v = weight1[k] * weight2[k + 1] * (mean1[k] - mean2[k + 1]) ** 2
        if v > best:
            best, best_k = v, k
    return centres[best_k]


@numba.njit(cache=True, nogil=True)
def label_otsu(values, labels, n, min_pixels, nbins=256):
    """(n + 1,) float64 Otsu threshold of each label 1..n's ``values`` (both 1-D, pixels of label 0
    ignored); NaN where a label has under ``min_pixels`` pixels or a constant value."""
    counts = np.zeros(n + 1, np.int64)
    for i in range(labels.size):
        counts[labels[i]] += 1
    start = np.zeros(n + 2, np.int64)
    for v in range(n + 1):
        start[v + 1] = start[v] + counts[v]
    fill = start[:-1].copy()
    grouped = np.empty(labels.size, values.dtype)
    for i in range(labels.size):
        v = labels[i]
        grouped[fill[v]] = values[i]
        fill[v] += 1
    out = np.full(n + 1, np.nan)
    for v in range(1, n + 1):
        pixels = grouped[start[v]:start[v + 1]]
        if pixels.size < min_pixels or pixels.min() == pixels.max():
            continue
        out[v] = otsu_of(pixels, nbins)
    return out


@numba.njit(cache=True, nogil=True)
def order_stats(values, ranks):
    """Values of 0-based ``ranks`` (sorted int64) in the sorted order of ``values`` (1-D, finite), as
    float64, without sorting them all: a 65,536-bin histogram finds each rank's bin (bins are monotone
    in the value), then only the values of those bins are sorted. Exact."""
    n = values.size
    lo, hi = values[0], values[0]
    for i in range(1, n):
        v = values[i]
        if v < lo:
            lo = v
        elif v > hi:
            hi = v
    out = np.empty(ranks.size)
    if lo == hi:
        out[:] = lo
        return out
    nbins = min(65536, max(16, n // 8))
    scale = nbins / (np.float64(hi) - np.float64(lo))
    counts = np.zeros(nbins + 1, np.int64)
    for i in range(n):
        b = min(int((np.float64(values[i]) - lo) * scale), nbins - 1)
        counts[b + 1] += 1
    for b in range(nbins):
        counts[b + 1] += counts[b]  # counts[b] = values in bins < b
    want = np.zeros(nbins, np.bool_)
    bins = np.empty(ranks.size, np.int64)
    for j in range(ranks.size):
        b = np.searchsorted(counts, ranks[j], side="right") - 1
        bins[j] = b
        want[b] = True
    size = 0
    for b in range(nbins):
        if want[b]:
            size += counts[b + 1] - counts[b]
    picked = np.empty(size, np.float64)
    k = 0
    for i in range(n):
        b = min(int((np.float64(values[i]) - lo) * scale), nbins - 1)
        if want[b]:
            picked[k] = values[i]
            k += 1
    picked.sort()  # the wanted bins in bin order (bins are monotone in the value)
    offset = 0
    for b in range(nbins):
        if want[b]:
            for j in range(ranks.size):
                if bins[j] == b:
                    out[j] = picked[offset + ranks[j] - counts[b]]
            offset += counts[b + 1] - counts[b]
    return out


@numba.njit(cache=True, nogil=True)
def nearest_within(labels, nearest, reach2):
    """``expand_labels`` from a nearest-seed map: pixel (r, c) takes the label of seed pixel
    ``nearest[r, c] - 1`` (1-based index of its nearest non-zero pixel of (H, W) ``labels`` in raster
    order) when that pixel is within sqrt(``reach2``) px, else 0. Returns (H, W) int32."""
    h, w = labels.shape
    n = 0
    for r in range(h):
        for c in range(w):
            if labels[r, c] != 0:
                n += 1
    seed_r = np.empty(n, np.int64)
    seed_c = np.empty(n, np.int64)
    seed_label = np.empty(n, np.int32)
    k = 0
    for r in range(h):
        for c in range(w):
            if labels[r, c] != 0:
                seed_r[k], seed_c[k], seed_label[k] = r, c, labels[r, c]
                k += 1
    out = np.zeros((h, w), np.int32)
    for r in range(h):
        for c in range(w):
            s = nearest[r, c] - 1
            dy, dx = r - seed_r[s], c - seed_c[s]
            if dy * dy + dx * dx <= reach2:
                out[r, c] = seed_label[s]
    return out


@numba.njit(cache=True, nogil=True)
def _median_of(values):
    n = values.size
    ranks = np.array([(n - 1) // 2, n // 2], np.int64)
    s = order_stats(values, ranks)
    return 0.5 * (s[0] + s[1])


@numba.njit(cache=True, nogil=True)
def robust_std(values, rounds=3, clip=4.0):
    """Std of the bulk of 1-D float ``values``: interquartile start (numpy's linear percentiles),
    then ``rounds`` of ``clip``-sigma clipping around the median (each: median and std of the values
    kept)."""
    n = values.size
    ranks = np.empty(6, np.int64)
    weights = np.empty(3)
    for j in range(3):
        q = (j + 1) * 0.25 * (n - 1)
        low = int(np.floor(q))
        ranks[2 * j], ranks[2 * j + 1], weights[j] = low, min(low + 1, n - 1), q - low
    s = order_stats(values, ranks)  # the ranks are sorted already
    qv = np.empty(3)
    for j in range(3):
        a, b, t = s[2 * j], s[2 * j + 1], weights[j]
        qv[j] = b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t  # numpy's linear interpolation
    centre = qv[1]
    scale = (qv[2] - qv[0]) / 1.349
    if scale == 0:
        mean = values.mean()
        scale = np.sqrt(((values - mean) ** 2).mean())
    kept = np.empty(n, values.dtype)
    for _ in range(rounds):
        m = 0
        for i in range(n):
            if abs(values[i] - centre) <= clip * scale:
                kept[m] = values[i]
                m += 1
        if m < 2:
            break
        part = kept[:m]
        mean = part.mean()
        centre = _median_of(part)
        scale = np.sqrt(((part - mean) ** 2).mean())
    return scale
