"""numba kernels for the per-pixel accumulations that numpy cannot express as one reduction."""

from __future__ import annotations

import heapq

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def zernike_monomials(seg, y, x, n_objects, degree):
    """Per-object sums of rho**j * exp(i m theta) = |w|**(j-m) * w**m, w = y + i x, over pixels in
    the unit disk, for 0 <= m <= j <= degree, j - m even. Returns (N, degree+1, degree+1) complex128
    indexed [object, j, m]. (Zernike moments are linear combinations of these.)"""
    out = np.zeros((n_objects, degree + 1, degree + 1), dtype=np.complex128)
    for p in range(seg.size):
        r2 = x[p] * x[p] + y[p] * y[p]
        if not (r2 <= 1.0 + 1e-9):  # pixels on the circle belong to it despite round-off
            continue
        w = complex(y[p], x[p])
        o = seg[p]
        wm = complex(1.0, 0.0)
        for m in range(degree + 1):
            term = wm
            for j in range(m, degree + 1, 2):
                out[o, j, m] += term
                term = term * r2
            wm = wm * w
    return out


@numba.njit(cache=True, nogil=True)
def central_moment_sums(rows, cols, cy, cx, starts, counts, out):
    """out[o, p, q] = sum over object o of (row - cy)**p (col - cx)**q for p, q < 4."""
    for o in range(starts.size):
        acc = np.zeros((4, 4))
        for i in range(starts[o], starts[o] + counts[o]):
            dy = rows[i] - cy[o]
            dx = cols[i] - cx[o]
            py = 1.0
            for p in range(4):
                pq = py
                for q in range(4):
                    acc[p, q] += pq
                    pq *= dx
                py *= dy
        out[o] = acc


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
def _cross(o0, o1, a0, a1, b0, b1):
    return (a0 - o0) * (b1 - o1) - (a1 - o1) * (b0 - o0)


@numba.njit(cache=True, nogil=True)
def _monotone_chain(pr, pc):
    """Convex hull (counter-clockwise, no collinear points) of points sorted by (row, col)."""
    n = pr.size
    hr = np.empty(2 * n + 1, dtype=pr.dtype)
    hc = np.empty(2 * n + 1, dtype=pc.dtype)
    k = 0
    for i in range(n):
        while k >= 2 and _cross(hr[k - 2], hc[k - 2], hr[k - 1], hc[k - 1], pr[i], pc[i]) <= 0:
            k -= 1
        hr[k], hc[k] = pr[i], pc[i]
        k += 1
    lower = k + 1
    for i in range(n - 2, -1, -1):
        while k >= lower and _cross(hr[k - 2], hc[k - 2], hr[k - 1], hc[k - 1], pr[i], pc[i]) <= 0:
            k -= 1
        hr[k], hc[k] = pr[i], pc[i]
        k += 1
    k = max(k - 1, 1)
    return hr[:k].copy(), hc[:k].copy()


@numba.njit(cache=True, nogil=True)
def _circle2(ar, ac, br, bc):
    cr, cc = (ar + br) / 2.0, (ac + bc) / 2.0
    return cr, cc, np.hypot(ar - cr, ac - cc)


@numba.njit(cache=True, nogil=True)
def _circle3(ar, ac, br, bc, qr, qc):
    d = 2.0 * (ar * (bc - qc) + br * (qc - ac) + qr * (ac - bc))
    if d == 0.0:
        best = _circle2(ar, ac, br, bc)
        for cand in (_circle2(ar, ac, qr, qc), _circle2(br, bc, qr, qc)):
            if cand[2] > best[2]:
                best = cand
        return best
    sa, sb, sq = ar * ar + ac * ac, br * br + bc * bc, qr * qr + qc * qc
    cr = (sa * (bc - qc) + sb * (qc - ac) + sq * (ac - bc)) / d
    cc = (sa * (qr - br) + sb * (ar - qr) + sq * (br - ar)) / d
    return cr, cc, np.hypot(ar - cr, ac - cc)


@numba.njit(cache=True, nogil=True)
def _enclosing_circle(pr, pc):
    """Minimum enclosing circle of a small point set (Welzl's incremental algorithm)."""
    eps = 1e-9
    cr, cc, rad = pr[0], pc[0], 0.0
    for i in range(1, pr.size):
        if np.hypot(pr[i] - cr, pc[i] - cc) <= rad + eps:
            continue
        cr, cc, rad = pr[i], pc[i], 0.0
        for j in range(i):
            if np.hypot(pr[j] - cr, pc[j] - cc) <= rad + eps:
                continue
            cr, cc, rad = _circle2(pr[i], pc[i], pr[j], pc[j])
            for k in range(j):
                if np.hypot(pr[k] - cr, pc[k] - cc) > rad + eps:
                    cr, cc, rad = _circle3(pr[i], pc[i], pr[j], pc[j], pr[k], pc[k])
    return cr, cc, rad


@numba.njit(cache=True, nogil=True)
def hull_measures(rows, cols, starts, counts, out):
    """Convex-hull measurements of every object from its pixels (grouped, raster order inside).

    out (N, 6): convex area (pixel centres inside the hull of the pixel-edge midpoints, as
    ``skimage.morphology.convex_hull_image``), enclosing-circle row, col, radius (pixel centres,
    as CellProfiler), min and max Feret diameter. NaN for absent objects.
    """
    offsets = ((-1, 0), (1, 0), (0, -1), (0, 1))
    for o in range(starts.size):
        n = counts[o]
        if n == 0:
            out[o] = np.nan
            continue
        pr = rows[starts[o]:starts[o] + n].astype(np.int64)
        pc = cols[starts[o]:starts[o] + n].astype(np.int64)
        hr, hc = _monotone_chain(pr, pc)
        fr, fc = hr.astype(np.float64), hc.astype(np.float64)
        out[o, 1], out[o, 2], out[o, 3] = _enclosing_circle(fr, fc)
        # Feret diameters (calipers) of the pixel-centre hull.
        h = hr.size
        max_d = 0.0
        for i in range(h):
            for j in range(i + 1, h):
                max_d = max(max_d, np.hypot(fr[i] - fr[j], fc[i] - fc[j]))
        min_w = 0.0
        if h >= 3:
            min_w = np.inf
            for i in range(h):
                j = (i + 1) % h
                er, ec = fr[j] - fr[i], fc[j] - fc[i]
                length = np.hypot(er, ec)
                widest = 0.0
                for k in range(h):
                    widest = max(widest, abs(er * (fc[k] - fc[i]) - ec * (fr[k] - fr[i])) / length)
                min_w = min(min_w, widest)
        out[o, 4], out[o, 5] = min_w, max_d
        # Convex area in doubled (integer) coordinates: hull of the edge midpoints of the hull pixels.
        m = 4 * h
        dr = np.empty(m, dtype=np.int64)
        dc = np.empty(m, dtype=np.int64)
        for i in range(h):
            for k in range(4):
                dr[4 * i + k] = 2 * hr[i] + offsets[k][0]
                dc[4 * i + k] = 2 * hc[i] + offsets[k][1]
        order = np.argsort(dr * (4 * (dc.max() + 2)) + dc)
        gr, gc = _monotone_chain(dr[order], dc[order])
        # Count pixel centres (2i, 2j) inside the CCW polygon: per row, intersect the edge half-planes.
        r0, r1, c0, c1 = pr.min(), pr.max(), pc.min(), pc.max()
        inside = 0
        g = gr.size
        for i in range(r0, r1 + 1):
            lo, hi = c0, c1
            for e in range(g):
                f = (e + 1) % g
                # cross = (fr - er) * (2j - ec) - (fc - ec) * (2i - er) >= 0, linear in j
                a = 2 * (gr[f] - gr[e])
                b = -(gr[f] - gr[e]) * gc[e] - (gc[f] - gc[e]) * (2 * i - gr[e])
                if a > 0:  # j >= ceil(-b / a)
                    lo = max(lo, -((b) // a))
                elif a < 0:  # j <= floor(-b / a) = floor(b / -a)
                    hi = min(hi, b // (-a))
                elif b < 0:
                    hi = lo - 1
            if hi >= lo:
                inside += hi - lo + 1
        out[o, 0] = inside


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
def perimeter_codes(padded, rows, cols, own):
    """skimage.measure.perimeter convolution code of every object pixel (0 for interior pixels).

    padded (H+2, W+2) label image; rows, cols (P,) in padded coordinates; own (P,) labels.
    """
    h, w = padded.shape
    border = np.zeros((h, w), dtype=padded.dtype)
    is_border = np.zeros(rows.size, dtype=np.bool_)
    for p in range(rows.size):
        i, j, k = rows[p], cols[p], own[p]
        if not (padded[i - 1, j] == k and padded[i + 1, j] == k and padded[i, j - 1] == k and padded[i, j + 1] == k):
            border[i, j] = k
            is_border[p] = True
    codes = np.zeros(rows.size, dtype=np.int64)
    for p in range(rows.size):
        if not is_border[p]:
            continue
        i, j, k = rows[p], cols[p], own[p]
        code = 1
        code += 2 * ((border[i - 1, j] == k) + (border[i + 1, j] == k) + (border[i, j - 1] == k) + (border[i, j + 1] == k))
        code += 10 * ((border[i - 1, j - 1] == k) + (border[i - 1, j + 1] == k)
                      + (border[i + 1, j - 1] == k) + (border[i + 1, j + 1] == k))
        codes[p] = code
    return codes


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
