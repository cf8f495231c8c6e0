"""Texture: Haralick features of the gray-level co-occurrence matrix (CellProfiler MeasureTexture).

As CellProfiler (and cp_measure), the whole channel is quantised once to 8 bits
(``rint(intensity * 255)`` on the 0-1 scale; no per-object stretching), pixels outside the object
and pixels that quantise to 0 take no part in co-occurrence pairs, the matrix is symmetric, and the
13 features follow ``mahotas.features.haralick(ignore_zeros=True)``. One feature per direction:
``_00`` (0, d) horizontal, ``_01`` (d, d), ``_02`` (d, 0) vertical, ``_03`` (d, -d).
"""

from __future__ import annotations

import numpy as np

from ._numba_intensity import haralick_objects
from ._objects import Objects

HARALICK = ["AngularSecondMoment", "Contrast", "Correlation", "Variance", "InverseDifferenceMoment",
            "SumAverage", "SumVariance", "SumEntropy", "Entropy", "DifferenceVariance", "DifferenceEntropy",
            "InfoMeas1", "InfoMeas2"]


def quantise(image: np.ndarray, levels: int = 256) -> np.ndarray:
    """(H, W) float 0-1 intensities -> uint8 gray levels 0..levels-1 (NaN -> 0, i.e. ignored)."""
    q = np.rint(np.clip(np.nan_to_num(image, nan=0.0), 0, 1) * 255)
    if levels != 256:
        q = np.rint(q * (levels - 1) / 255)
    return q.astype(np.uint8)


def texture_features(objects: Objects, image: np.ndarray, *, scale: int = 3, levels: int = 256) -> dict[str, np.ndarray]:
    """Haralick features of every object for the 4 directions at distance ``scale``.

    Parameters
    ----------
    objects
        The grouped pixels of one compartment.
    image
        (H, W) float64 intensities on the 0-1 scale.
    scale
        Pixel distance of the co-occurrence pairs.
    levels
        Gray levels (CellProfiler 3+: 256).

    Returns
    -------
    dict of ``"Texture_<Feature>_{c}_<scale>_<direction:02d>"`` -> (N,) (``{c}``: the channel, filled in
    by the caller).
    NaN for every feature of an object when a direction has no valid pair (object thinner than
    ``scale``, or dark: every pixel quantises to 0).
    """
    if scale < 1:
        raise ValueError(f"texture scale must be >= 1 pixel, got {scale}")
    out = np.empty((objects.n, 4, len(HARALICK)))
    haralick_objects(quantise(image, levels), objects.image, np.arange(1, objects.n + 1), objects.boxes, scale, out)
    return {f"Texture_{name}_{{c}}_{scale}_{d:02d}": out[:, d, k]
            for d in range(4) for k, name in enumerate(HARALICK)}
