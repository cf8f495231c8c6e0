"""Numba kernels of the shape features: moments, Zernike monomials, convex hull, Feret, enclosing circle, perimeter."""

from __future__ import annotations

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


@numba.njit(cache=True, nogil=True, fastmath=True)
def weighted_zernike_monomials(seg, y, x, weights, n_objects, degree):
    """As `zernike_monomials`, each pixel weighted by ``weights[c, p]`` for C channels at once
    (pixels grouped by object: ``seg`` non-decreasing). Returns (C, N, degree+1, degree+1) complex128."""
    n_channels = weights.shape[0]
    d1 = degree + 1
    n_terms = 0
    for m in range(d1):
        for j in range(m, d1, 2):
            n_terms += 1
    out = np.zeros((n_channels, n_objects, d1, d1), dtype=np.complex128)
    acc = np.zeros((n_channels, 2 * n_terms))
    basis = np.empty(2 * n_terms)
    current = -1
    for p in range(seg.size + 1):
        o = seg[p] if p < seg.size else -2
        if o != current:
            if current >= 0:
                for c in range(n_channels):
                    t = 0
                    for m in range(d1):
                        for j in range(m, d1, 2):
                            out[c, current, j, m] = complex(acc[c, 2 * t], acc[c, 2 * t + 1])
                            t += 1
                acc[:] = 0.0
            current = o
        if p == seg.size:
            break
        r2 = x[p] * x[p] + y[p] * y[p]
        if not (r2 <= 1.0 + 1e-9):
            continue
        yr, xi = y[p], x[p]
        wm_re, wm_im = 1.0, 0.0
        t = 0
        for m in range(d1):
            t_re, t_im = wm_re, wm_im
            for j in range(m, d1, 2):
                basis[2 * t] = t_re
                basis[2 * t + 1] = t_im
                t += 1
                t_re *= r2
                t_im *= r2
            wm_re, wm_im = wm_re * yr - wm_im * xi, wm_re * xi + wm_im * yr
        for c in range(n_channels):
            wc = weights[c, p]
            for t in range(2 * n_terms):
                acc[c, t] += basis[t] * wc
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
