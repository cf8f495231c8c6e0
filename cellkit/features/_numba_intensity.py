"""Numba kernels of the intensity and texture features: Haralick co-occurrence, intensity statistics, geodesic distance."""

from __future__ import annotations

import heapq

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _entropy(p):
    h = 0.0
    for v in p.ravel():
        if v > 0:
            h -= v * np.log2(v)
    return h


@numba.njit(cache=True, nogil=True)
def haralick_object(crop, dy, dx, out):
    """The 13 Haralick features of one object (mahotas ``haralick(ignore_zeros=True)`` definitions).

    crop (h, w) uint8 quantised intensities, 0 outside the object; (dy, dx) offset.
    Writes out (13,); all NaN when there is no pair of non-zero pixels.
    """
    h, w = crop.shape
    maxv = 0
    for i in range(h):
        for j in range(w):
            if crop[i, j] > maxv:
                maxv = crop[i, j]
    maxv += 1
    cmat = np.zeros((maxv, maxv))
    total = 0.0
    for i in range(h):
        i2 = i + dy
        if i2 < 0 or i2 >= h:
            continue
        for j in range(w):
            j2 = j + dx
            if j2 < 0 or j2 >= w:
                continue
            a = crop[i, j]
            b = crop[i2, j2]
            if a == 0 or b == 0:
                continue
            cmat[a, b] += 1.0
            cmat[b, a] += 1.0
            total += 2.0
    if total == 0:
        out[:] = np.nan
        return
    p = cmat / total
    px = np.zeros(maxv)
    for i in range(maxv):
        for j in range(maxv):
            px[j] += p[i, j]
    ux = 0.0
    ex2 = 0.0
    for k in range(maxv):
        ux += k * px[k]
        ex2 += k * k * px[k]
    vx = ex2 - ux * ux
    pplus = np.zeros(2 * maxv)
    pminus = np.zeros(maxv)
    asm = 0.0
    idm = 0.0
    sij = 0.0
    for i in range(maxv):
        for j in range(maxv):
            v = p[i, j]
            if v == 0:
                continue
            asm += v * v
            d = i - j
            idm += v / (1.0 + d * d)
            sij += i * j * v
            pplus[i + j] += v
            pminus[abs(d)] += v
    contrast = 0.0
    for k in range(maxv):
        contrast += k * k * pminus[k]
    sx = np.sqrt(vx)
    if sx == 0.0:
        corr = 1.0
    else:
        corr = (sij - ux * ux) / (sx * sx)
    sum_avg = 0.0
    sum_sq = 0.0
    for k in range(2 * maxv):
        sum_avg += k * pplus[k]
        sum_sq += k * k * pplus[k]
    sum_var = sum_sq - sum_avg * sum_avg
    sum_ent = _entropy(pplus)
    ent = _entropy(p)
    mean_m = 1.0 / maxv
    diff_var = 0.0
    for k in range(maxv):
        diff_var += (pminus[k] - mean_m) ** 2
    diff_var /= maxv
    diff_ent = _entropy(pminus)
    hx = _entropy(px)
    hxy1 = 0.0
    for i in range(maxv):
        for j in range(maxv):
            v = p[i, j]
            if v > 0:
                hxy1 -= v * np.log2(px[i] * px[j])
    hxy2 = 2.0 * hx
    info1 = (ent - hxy1) / hx if hx != 0.0 else ent - hxy1
    info2 = np.sqrt(max(0.0, 1.0 - np.exp(-2.0 * (hxy2 - ent))))
    out[0] = asm
    out[1] = contrast
    out[2] = corr
    out[3] = vx
    out[4] = idm
    out[5] = sum_avg
    out[6] = sum_var
    out[7] = sum_ent
    out[8] = ent
    out[9] = diff_var
    out[10] = diff_ent
    out[11] = info1
    out[12] = info2


@numba.njit(cache=True, nogil=True)
def haralick_objects(quantised, labels, index, boxes, distance, out):
    """Haralick features of every object in ``index`` for the 4 CellProfiler directions.

    quantised (H, W) uint8; labels (H, W) int64; boxes (N, 4) r0, r1, c0, c1 (r0 < 0: absent);
    out (N, 4, 13) float64.
    """
    dirs = ((0, 1), (1, 1), (1, 0), (1, -1))
    feats = np.empty(13)
    for o in range(index.size):
        r0, r1, c0, c1 = boxes[o, 0], boxes[o, 1], boxes[o, 2], boxes[o, 3]
        if r0 < 0:
            out[o] = np.nan
            continue
        crop = np.zeros((r1 - r0, c1 - c0), dtype=np.uint8)
        for i in range(r0, r1):
            for j in range(c0, c1):
                if labels[i, j] == index[o]:
                    crop[i - r0, j - c0] = quantised[i, j]
        undefined = False
        for d in range(4):
            haralick_object(crop, dirs[d][0] * distance, dirs[d][1] * distance, feats)
            if np.isnan(feats[0]):
                undefined = True
            out[o, d] = feats
        if undefined:
            out[o] = np.nan


@numba.njit(cache=True, nogil=True)
def _cp_quantile(s, frac):
    """CellProfiler quantile of sorted ``s``: linear interpolation at position n * frac."""
    n = s.size
    pos = n * frac
    lo = min(int(np.floor(pos)), n - 1)
    hi = min(lo + 1, n - 1)
    f = pos - lo
    return s[lo] * (1 - f) + s[hi] * f


@numba.njit(cache=True, nogil=True)
def intensity_stats(values, rows, cols, edge, starts, counts, out):
    """Per-object intensity statistics from grouped pixel values (one pass per object).

    out (N, 15): integrated, mean, std, min, max, lower quartile, median, upper quartile, MAD,
    mass displacement, edge integrated, edge mean, edge std, edge min, edge max. NaN where undefined.
    """
    for o in range(starts.size):
        n = counts[o]
        out[o] = np.nan
        if n == 0:
            continue
        v = values[starts[o]:starts[o] + n]
        r = rows[starts[o]:starts[o] + n]
        c = cols[starts[o]:starts[o] + n]
        e = edge[starts[o]:starts[o] + n]
        total = 0.0
        wr = 0.0
        wc = 0.0
        mr = 0.0
        mc = 0.0
        for i in range(n):
            total += v[i]
            wr += r[i] * v[i]
            wc += c[i] * v[i]
            mr += r[i]
            mc += c[i]
        mean = total / n
        ss = 0.0
        for i in range(n):
            ss += (v[i] - mean) ** 2
        s = np.sort(v)
        out[o, 0] = total
        out[o, 1] = mean
        out[o, 2] = np.sqrt(ss / n)
        out[o, 3] = s[0]
        out[o, 4] = s[n - 1]
        out[o, 5] = _cp_quantile(s, 0.25)
        median = _cp_quantile(s, 0.5)
        out[o, 6] = median
        out[o, 7] = _cp_quantile(s, 0.75)
        out[o, 8] = _cp_quantile(np.sort(np.abs(s - median)), 0.5)
        if total != 0:
            out[o, 9] = np.hypot(wr / total - mr / n, wc / total - mc / n)
        en = 0
        et = 0.0
        emin = np.inf
        emax = -np.inf
        for i in range(n):
            if e[i]:
                en += 1
                et += v[i]
                emin = min(emin, v[i])
                emax = max(emax, v[i])
        if en > 0:
            em = et / en
            ess = 0.0
            for i in range(n):
                if e[i]:
                    ess += (v[i] - em) ** 2
            out[o, 10] = et
            out[o, 11] = em
            out[o, 12] = np.sqrt(ess / en)
            out[o, 13] = emin
            out[o, 14] = emax


@numba.njit(cache=True, nogil=True)
def geodesic_from_centre(image, boxes, ci, cj, counts, out):
    """Path length inside each object from its centre pixel (8-neighbour steps of 1 and sqrt 2,
    Dijkstra), as CellProfiler's propagation from the centre on a blank image.

    image (H, W) object row + 1; boxes (N, 4); ci, cj (N,) centre; out (P,) in the objects' pixel
    order (grouped, raster order inside). Pixels not reached (another part of a split object) get inf.
    """
    steps = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
    diag = np.sqrt(2.0)
    p = 0
    for o in range(boxes.shape[0]):
        r0, r1, c0, c1 = boxes[o, 0], boxes[o, 1], boxes[o, 2], boxes[o, 3]
        if r0 < 0:
            continue
        h, w = r1 - r0, c1 - c0
        dist = np.full((h, w), np.inf)
        si, sj = int(ci[o]) - r0, int(cj[o]) - c0
        dist[si, sj] = 0.0
        heap = [(0.0, si, sj)]
        while len(heap) > 0:
            d, i, j = heapq.heappop(heap)
            if d > dist[i, j]:
                continue
            for di, dj in steps:
                a, b = i + di, j + dj
                if a < 0 or a >= h or b < 0 or b >= w or image[r0 + a, c0 + b] != o + 1:
                    continue
                nd = d + (diag if di != 0 and dj != 0 else 1.0)
                if nd < dist[a, b]:
                    dist[a, b] = nd
                    heapq.heappush(heap, (nd, a, b))
        for i in range(h):
            for j in range(w):
                if image[r0 + i, c0 + j] == o + 1:
                    out[p] = dist[i, j]
                    p += 1
