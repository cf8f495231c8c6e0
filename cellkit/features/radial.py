"""RadialDistribution: intensity in concentric rings from each object's centre (CellProfiler
MeasureObjectIntensityDistribution, scaled bins).

The centre is the object pixel farthest from the edge (first in raster order on ties); a pixel's
normalised distance is ``d_centre / (d_centre + d_edge + 0.001)``, binned into ``bins`` rings, with
``d_centre`` the path length inside the object (8-neighbour Dijkstra, as CellProfiler's propagation)
and ``d_edge`` the Euclidean distance to the nearest pixel outside the object (the image border is
not an edge here, as in CellProfiler).
"""

from __future__ import annotations

import numpy as np

from ._objects import Objects


def radial_features(objects: Objects, image: np.ndarray, *, bins: int = 4) -> dict[str, np.ndarray]:
    """FracAtD, MeanFrac and RadialCV of every object in ``bins`` scaled rings.

    Parameters
    ----------
    objects
        The grouped pixels of one compartment.
    image
        (H, W) float64 intensities (NaN pixels are left out).
    bins
        Number of rings.

    Returns
    -------
    dict of ``"RadialDistribution_<Feature>_{c}_<k>of<bins>"`` -> (N,) float64 (``{c}``: the channel).
    FracAtD and MeanFrac are NaN for objects with zero total intensity; RadialCV is NaN for a
    ring without pixels (CellProfiler writes 0 there).
    """
    if bins < 1:
        raise ValueError(f"radial bins must be >= 1, got {bins}")
    ci, cj = objects.deepest_pixel
    values = image.ravel()[objects.flat]
    dist_centre = objects.distance_from_centre
    keep = np.isfinite(values) & np.isfinite(dist_centre)
    seg, rows, cols = objects.seg[keep], objects.rows[keep], objects.cols[keep]
    dist_edge, dist_centre, values = objects.distance_to_edge_inside_image[keep], dist_centre[keep], values[keep]
    di, dj = rows - ci[seg], cols - cj[seg]
    ring = np.minimum((dist_centre / (dist_centre + dist_edge + 0.001) * bins).astype(np.int64), bins - 1)
    n = objects.n
    key = seg * bins + ring
    intensity = np.bincount(key, weights=values, minlength=n * bins).reshape(n, bins)
    pixels = np.bincount(key, minlength=n * bins).reshape(n, bins).astype(np.float64)
    wedge = (di > 0).astype(np.int64) + 2 * (dj > 0) + 4 * (np.abs(di) > np.abs(dj))
    key8 = key * 8 + wedge
    wedge_sum = np.bincount(key8, weights=values, minlength=n * bins * 8).reshape(n, bins, 8)
    wedge_n = np.bincount(key8, minlength=n * bins * 8).reshape(n, bins, 8)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = intensity / intensity.sum(1, keepdims=True)
        mean_frac = frac / (pixels / pixels.sum(1, keepdims=True) + np.finfo(float).eps)
        wedge_mean = np.where(wedge_n > 0, wedge_sum / wedge_n, np.nan)
        filled = wedge_n > 0
        k = filled.sum(2)
        mean_w = np.where(filled, wedge_mean, 0).sum(2) / k
        std_w = np.sqrt(np.where(filled, (wedge_mean - mean_w[..., None]) ** 2, 0).sum(2) / k)
        cv = std_w / mean_w
    out = {}
    for b in range(bins):
        out[f"RadialDistribution_FracAtD_{{c}}_{b + 1}of{bins}"] = frac[:, b]
        out[f"RadialDistribution_MeanFrac_{{c}}_{b + 1}of{bins}"] = mean_frac[:, b]
        out[f"RadialDistribution_RadialCV_{{c}}_{b + 1}of{bins}"] = cv[:, b]
    return out


def radial_zernike_features(objects: Objects, images: list[np.ndarray], *, degree: int = 9,
                            phase: bool = True) -> list[dict[str, np.ndarray]]:
    """Intensity-weighted Zernike moments on each object's minimum enclosing circle (CellProfiler
    MeasureObjectIntensityDistribution "Calculate intensity Zernikes").

    For every channel and (n, m), n <= ``degree``: ``ZernikeMagnitude = |sum_p I_p V_nm(p)| / A``
    (A: the object's pixel count) and ``ZernikePhase = arctan2(Re, Im)`` of that sum (CellProfiler's
    argument order), with pixel coordinates ``w = y + i x`` relative to the circle centre over its
    radius. All channels are summed in one numba pass over the pixels.

    Parameters
    ----------
    objects
        The grouped pixels of one compartment.
    images
        C (H, W) float64 intensities (NaN pixels weigh 0).
    degree, phase
        Highest order n; also return the phases.

    Returns
    -------
    One dict per channel, ``"RadialDistribution_ZernikeMagnitude_{c}_<n>_<m>"`` (and ``...Phase...``)
    -> (N,) float64; NaN for absent and one-pixel objects (radius 0).
    """
    from .shape import _radial_coefficients, hull_measures, zernike_indexes
    from ._numba_shape import weighted_zernike_monomials

    indexes = zernike_indexes(degree)
    hull = hull_measures(objects)
    centres, radii = hull["centres"], hull["radii"]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = radii[objects.seg]
        y = (objects.rows - centres[objects.seg, 0]) / r
        x = (objects.cols - centres[objects.seg, 1]) / r
    weights = np.nan_to_num(np.stack([im.ravel()[objects.flat] for im in images]), nan=0.0) if images else \
        np.zeros((0, objects.flat.size))
    monomials = weighted_zernike_monomials(objects.seg, y, x, np.ascontiguousarray(weights), objects.n, degree)
    coeffs = _radial_coefficients(indexes)
    undefined = ~(radii > 0)
    out = []
    for c in range(len(images)):
        sums = np.stack([sum(coeffs[k, s] * monomials[c, :, n - 2 * s, m] for s in range((n - m) // 2 + 1))
                         for k, (n, m) in enumerate(indexes)], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            magnitude = np.abs(sums) / objects.counts[:, None]
        angle = np.arctan2(sums.real, sums.imag)
        magnitude[undefined], angle[undefined] = np.nan, np.nan
        feats = {}
        for k, (n, m) in enumerate(indexes):
            feats[f"RadialDistribution_ZernikeMagnitude_{{c}}_{n}_{m}"] = magnitude[:, k]
            if phase:
                feats[f"RadialDistribution_ZernikePhase_{{c}}_{n}_{m}"] = angle[:, k]
        out.append(feats)
    return out
