"""Intensity: per-object intensity statistics of one channel (CellProfiler MeasureObjectIntensity)."""

from __future__ import annotations

import numpy as np

from ._numba_intensity import intensity_stats
from ._objects import Objects

INTENSITY = ["IntegratedIntensity", "MeanIntensity", "StdIntensity", "MinIntensity", "MaxIntensity",
             "LowerQuartileIntensity", "MedianIntensity", "UpperQuartileIntensity", "MADIntensity",
             "MassDisplacement", "IntegratedIntensityEdge", "MeanIntensityEdge", "StdIntensityEdge",
             "MinIntensityEdge", "MaxIntensityEdge"]


def intensity_features(objects: Objects, image: np.ndarray) -> dict[str, np.ndarray]:
    """Intensity features of every object in one channel.

    Quartiles, median and MAD use CellProfiler's convention (linear interpolation at ``n * q`` of
    the sorted values); std is the population std; edge = pixels with a 4-neighbour outside the
    object; mass displacement = distance between the intensity-weighted and the plain centroid.

    Parameters
    ----------
    objects
        The grouped pixels of one compartment.
    image
        (H, W) float64 intensities on CellProfiler's scale (counts / 65535); NaN pixels are left out.

    Returns
    -------
    dict of ``"Intensity_<Feature>_{c}"`` (``{c}``: the channel) -> (N,) float64; NaN for objects
    without finite pixels, edge features NaN without edge pixels, MassDisplacement NaN at zero
    integrated intensity.
    """
    values = image.ravel()[objects.flat]
    finite = np.isfinite(values)
    if not finite.all():  # measure on the finite pixels only
        objects = objects.subset(finite)
        values = values[finite]
    out = np.empty((objects.n, len(INTENSITY)))
    intensity_stats(values, objects.rows, objects.cols, objects.inner_boundary, objects.starts, objects.counts, out)
    return {f"Intensity_{name}_{{c}}": out[:, k] for k, name in enumerate(INTENSITY)}
