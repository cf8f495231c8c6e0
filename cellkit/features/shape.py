"""AreaShape: size, shape, moments and Zernike features of every object (CellProfiler definitions).

All per-pixel reductions are ``bincount``s over the grouped pixel lists of
`cellkit.features._objects.Objects`; the convex hull, the radii (distance transform) and the
enclosing circle are per object on its bounding box.
"""

from __future__ import annotations

from math import factorial

import numpy as np

from ._numba_shape import hull_measures as _hull_measures
from ._numba_shape import central_moment_sums, perimeter_codes, zernike_monomials
from ._objects import Objects

# Perimeter weights of skimage.measure.perimeter (4-neighbourhood), indexed by the convolution
# value 1 + 2 * (4-neighbour border pixels) + 10 * (diagonal border pixels).
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + np.sqrt(2)) / 2


def perimeter(objects: Objects) -> np.ndarray:
    """Per-object perimeter, as ``skimage.measure.perimeter(neighborhood=4)`` on each object."""
    padded = np.pad(objects.image, 1)
    codes = perimeter_codes(padded, objects.rows + 1, objects.cols + 1, objects.seg + 1)
    return objects.sum(_PERIMETER_WEIGHTS[np.minimum(codes, 49)])


def central_moments(objects: Objects) -> np.ndarray:
    """(N, 4, 4) central moments mu_pq (p: rows, q: cols) up to order 3."""
    cy, cx = objects.centroid
    mu = np.empty((objects.n, 4, 4))
    central_moment_sums(objects.rows, objects.cols, cy, cx, objects.starts, objects.counts, mu)
    mu[:, 0, 1] = mu[:, 1, 0] = 0.0  # zero by definition; the sums only hold round-off
    return mu


def hu_moments(nu: np.ndarray) -> np.ndarray:
    """(N, 7) Hu invariants from (N, 4, 4) normalised central moments."""
    n20, n02, n11 = nu[:, 2, 0], nu[:, 0, 2], nu[:, 1, 1]
    n30, n03, n21, n12 = nu[:, 3, 0], nu[:, 0, 3], nu[:, 2, 1], nu[:, 1, 2]
    a, b = n30 + n12, n21 + n03
    return np.stack([
        n20 + n02,
        (n20 - n02) ** 2 + 4 * n11 ** 2,
        (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2,
        a ** 2 + b ** 2,
        (n30 - 3 * n12) * a * (a ** 2 - 3 * b ** 2) + (3 * n21 - n03) * b * (3 * a ** 2 - b ** 2),
        (n20 - n02) * (a ** 2 - b ** 2) + 4 * n11 * a * b,
        (3 * n21 - n03) * a * (a ** 2 - 3 * b ** 2) - (n30 - 3 * n12) * b * (3 * a ** 2 - b ** 2),
    ], axis=1)


def zernike_indexes(degree: int) -> list[tuple[int, int]]:
    """(n, m) with 0 <= m <= n <= degree and n - m even, in CellProfiler's order."""
    return [(n, m) for n in range(degree + 1) for m in range(n + 1) if (n - m) % 2 == 0]


def _radial_coefficients(indexes) -> np.ndarray:
    coeffs = np.zeros((len(indexes), max(n for n, _ in indexes) // 2 + 1))
    for k, (n, m) in enumerate(indexes):
        for s in range((n - m) // 2 + 1):
            coeffs[k, s] = ((-1) ** s * factorial(n - s)
                            / (factorial(s) * factorial((n + m) // 2 - s) * factorial((n - m) // 2 - s)))
    return coeffs


def zernike(objects: Objects, circles: tuple[np.ndarray, np.ndarray],
            degree: int = 9) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Zernike moment magnitudes |V_nm| / (pi r^2) on each object's minimum enclosing circle.

    Returns the (n, m) list and an (N, K) array (NaN for objects of one pixel: r = 0).
    """
    centres, radii = circles
    indexes = zernike_indexes(degree)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = radii[objects.seg]
        y = (objects.rows - centres[objects.seg, 0]) / r
        x = (objects.cols - centres[objects.seg, 1]) / r
    monomials = zernike_monomials(objects.seg, y, x, objects.n, degree)
    coeffs = _radial_coefficients(indexes)
    sums = np.stack([sum(coeffs[k, s] * monomials[:, n - 2 * s, m] for s in range((n - m) // 2 + 1))
                     for k, (n, m) in enumerate(indexes)], axis=1) if indexes else np.zeros((objects.n, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.abs(sums) / (np.pi * radii[:, None] ** 2)
    score[radii == 0] = np.nan
    return indexes, score


def hull_measures(objects: Objects) -> dict[str, np.ndarray]:
    """Convex area, minimum enclosing circle and Feret diameters of every object (numba, one pass;
    kept on ``objects`` for the other groups that need the circle)."""
    if "_hull" in objects.__dict__:
        return objects.__dict__["_hull"]
    out = np.empty((objects.n, 6))
    _hull_measures(objects.rows, objects.cols, objects.starts, objects.counts, out)
    objects.__dict__["_hull"] = {"convex_area": out[:, 0], "centres": out[:, 1:3], "radii": out[:, 3],
                                 "min_feret": out[:, 4], "max_feret": out[:, 5]}
    return objects.__dict__["_hull"]


def radii(objects: Objects) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum, mean and median distance of object pixels to the nearest pixel outside the object."""
    dist = objects.distance_to_edge
    return objects.reduce(np.maximum, dist), objects.mean(dist), objects.median(dist)


def euler_number(objects: Objects) -> np.ndarray:
    """Euler number (connected components minus holes, 8-connected foreground) of every object, by
    counting 2x2 bit-quads over the whole label image at once (Gray 1971):
    ``E = (Q1 - Q3 - 2 QD) / 4`` per object, as ``skimage.measure.regionprops(...).euler_number``."""
    img = np.pad(objects.image, 1)
    quad = [img[:-1, :-1], img[:-1, 1:], img[1:, :-1], img[1:, 1:]]  # a b / c d
    touched = np.flatnonzero((quad[0] | quad[1] | quad[2] | quad[3]).ravel())  # windows with an object pixel
    quad = [q.ravel()[touched] for q in quad]
    score = np.zeros(objects.n + 1)
    for i, owner in enumerate(quad):
        first = owner > 0
        for prev in quad[:i]:
            first &= prev != owner  # count each label once per window, at its first position
        matches = sum((q == owner).astype(np.int64) for q in quad)
        diagonal = (matches == 2) & (((quad[0] == owner) & (quad[3] == owner)) | ((quad[1] == owner) & (quad[2] == owner)))
        weight = np.where(matches == 1, 1.0, 0.0) - (matches == 3) - 2.0 * diagonal
        score += np.bincount(owner[first], weights=weight[first], minlength=objects.n + 1)
    return score[1:] / 4


def shape_features(objects: Objects, *, zernike_degree: int = 9, moments: bool = True) -> dict[str, np.ndarray]:
    """AreaShape features of every object.

    Parameters
    ----------
    objects
        The grouped pixels of one compartment.
    zernike_degree
        Highest Zernike order n (CellProfiler: 9, 30 features); < 0 skips them.
    moments
        Also report central, normalised and Hu moments and the inertia tensor and its eigenvalues.

    Returns
    -------
    dict of feature name (without the compartment prefix, e.g. ``"AreaShape_Area"``) -> (N,) float64.
    """
    area = objects.counts.astype(np.float64)
    area[~objects.present] = np.nan
    perim = perimeter(objects)
    mu = central_moments(objects)
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b, c = mu[:, 2, 0] / mu[:, 0, 0], mu[:, 1, 1] / mu[:, 0, 0], mu[:, 0, 2] / mu[:, 0, 0]
    half_trace, disc = (a + c) / 2, np.sqrt(((a - c) / 2) ** 2 + b ** 2)
    eig1, eig2 = np.clip(half_trace + disc, 0, None), np.clip(half_trace - disc, 0, None)
    orientation = np.where(c - a == 0, np.where(-b < 0, np.pi / 4, -np.pi / 4), 0.5 * np.arctan2(2 * b, a - c))
    boxes = objects.boxes
    bbox_area = np.where(boxes[:, 0] >= 0, (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2]), np.nan)
    hull = hull_measures(objects)
    convex = hull["convex_area"]
    max_r, mean_r, median_r = radii(objects)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "Area": area,
            "Perimeter": perim,
            "FormFactor": np.where(perim > 0, 4 * np.pi * area / perim ** 2, np.nan),
            "Compactness": np.where(perim > 0, perim ** 2 / np.maximum(4 * np.pi * area, 1), np.nan),
            "Eccentricity": np.where(eig1 > 0, np.sqrt(1 - eig2 / eig1), np.nan),
            "MajorAxisLength": 4 * np.sqrt(eig1),
            "MinorAxisLength": 4 * np.sqrt(eig2),
            "Orientation": np.degrees(orientation),
            "EquivalentDiameter": np.sqrt(4 * area / np.pi),
            "Solidity": area / convex,
            "ConvexArea": convex,
            "Extent": area / bbox_area,
            "BoundingBoxArea": bbox_area,
            "MaximumRadius": max_r,
            "MeanRadius": mean_r,
            "MedianRadius": median_r,
            "MinFeretDiameter": hull["min_feret"],
            "MaxFeretDiameter": hull["max_feret"],
            "EulerNumber": euler_number(objects),
        }
        if moments:
            for p in range(3):
                for q in range(4):
                    out[f"CentralMoment_{p}_{q}"] = mu[:, p, q]
            nu = np.full_like(mu, np.nan)
            for p in range(4):
                for q in range(4):
                    if p + q >= 2:
                        nu[:, p, q] = mu[:, p, q] / mu[:, 0, 0] ** ((p + q) / 2 + 1)
                        out[f"NormalizedMoment_{p}_{q}"] = nu[:, p, q]
            for k, hu in enumerate(hu_moments(nu).T):
                out[f"HuMoment_{k}"] = hu
            # skimage's inertia tensor (row/col axes swapped, as CellProfiler reports it)
            out["InertiaTensor_0_0"], out["InertiaTensor_1_1"] = c, a
            out["InertiaTensor_0_1"] = out["InertiaTensor_1_0"] = -b
            out["InertiaTensorEigenvalues_0"], out["InertiaTensorEigenvalues_1"] = eig1, eig2
    if zernike_degree >= 0:
        indexes, scores = zernike(objects, (hull["centres"], hull["radii"]), zernike_degree)
        for k, (n, m) in enumerate(indexes):
            out[f"Zernike_{n}_{m}"] = scores[:, k]
    return {f"AreaShape_{name}": np.where(objects.present, value, np.nan) for name, value in out.items()}
