"""Intensity: per-object intensity statistics of one channel (CellProfiler MeasureObjectIntensity)."""

from __future__ import annotations

import numpy as np

from ._objects import Objects


def _sorted_by_object(objects: Objects, values: np.ndarray, raw: np.ndarray | None) -> np.ndarray:
    """Order (P,) that sorts pixels by object, then by value (radix sorts for uint16 input)."""
    if raw is not None and raw.dtype.itemsize <= 2:
        by_value = np.argsort(raw, kind="stable")
        seg = objects.seg[by_value]
        seg = seg.astype(np.uint16) if objects.n < 65536 else seg
        return by_value[np.argsort(seg, kind="stable")]
    return np.lexsort((values, objects.seg))


def _quantile(sorted_values: np.ndarray, starts: np.ndarray, counts: np.ndarray, fraction: float) -> np.ndarray:
    """CellProfiler's quantile: linear interpolation at position ``n * fraction`` of each sorted run."""
    out = np.full(counts.size, np.nan)
    ok = counts > 0
    n, start = counts[ok], starts[ok]
    pos = n * fraction
    lo = np.minimum(np.floor(pos).astype(np.int64), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    out[ok] = sorted_values[start + lo] * (1 - frac) + sorted_values[start + hi] * frac
    return out


def intensity_features(objects: Objects, image: np.ndarray, raw: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Intensity features of every object in one channel.

    Parameters
    ----------
    objects
        The grouped pixels of one compartment.
    image
        (H, W) float64 intensities on CellProfiler's scale (counts / 65535); NaN pixels are left out.
    raw
        Optional (H, W) uint16 counts of the same channel, for a faster (radix) sort.

    Returns
    -------
    dict of ``"Intensity_<Feature>_{c}"`` (``{c}``: the channel) -> (N,) float64; NaN for objects without finite pixels.
    """
    values = image.ravel()[objects.flat]
    finite = np.isfinite(values)
    if not finite.all():  # drop NaN pixels: measure on the finite ones only
        objects = objects.subset(finite)
        values = values[finite]
        raw = None
    else:
        raw = None if raw is None else raw.ravel()[objects.flat]
    n = objects.counts.astype(np.float64)
    seg = objects.seg
    with np.errstate(invalid="ignore", divide="ignore"):
        total = objects.sum(values)
        mean = total / n
        std = np.sqrt(np.maximum(objects.mean((values - mean[seg]) ** 2), 0))
        order = _sorted_by_object(objects, values, raw)
        sorted_values = values[order]
        median = _quantile(sorted_values, objects.starts, objects.counts, 0.5)
        cy, cx = objects.centroid
        wy = objects.sum(objects.rows * values) / total
        wx = objects.sum(objects.cols * values) / total
        edge = objects.inner_boundary
        edge_n = objects.sum(edge.astype(np.float64))
        edge_total = objects.sum(np.where(edge, values, 0.0))
        edge_mean = edge_total / edge_n
        edge_std = np.sqrt(np.maximum(objects.sum(np.where(edge, (values - edge_mean[seg]) ** 2, 0.0)) / edge_n, 0))
        edge_values = np.where(edge, values, np.nan)
        out = {
            "IntegratedIntensity": total,
            "MeanIntensity": mean,
            "StdIntensity": std,
            "MinIntensity": _quantile(sorted_values, objects.starts, objects.counts, 0.0),
            "MaxIntensity": objects.reduce(np.fmax, values),
            "LowerQuartileIntensity": _quantile(sorted_values, objects.starts, objects.counts, 0.25),
            "MedianIntensity": median,
            "UpperQuartileIntensity": _quantile(sorted_values, objects.starts, objects.counts, 0.75),
            "MADIntensity": _mad(objects, sorted_values, median),
            "MassDisplacement": np.hypot(wy - cy, wx - cx),
            "IntegratedIntensityEdge": np.where(edge_n > 0, edge_total, np.nan),
            "MeanIntensityEdge": edge_mean,
            "StdIntensityEdge": edge_std,
            "MinIntensityEdge": objects.reduce(np.fmin, edge_values),
            "MaxIntensityEdge": objects.reduce(np.fmax, edge_values),
        }
    return {f"Intensity_{name}_{{c}}": np.where(n > 0, value, np.nan) for name, value in out.items()}


def _mad(objects: Objects, sorted_values: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Median absolute deviation, CellProfiler convention (quantile 1/2 at ``n * q``)."""
    dev = np.abs(sorted_values - median[objects.seg])
    # |x - median| is V-shaped along each value-sorted run; a per-object sort restores order.
    order = np.lexsort((dev, objects.seg))
    return _quantile(dev[order], objects.starts, objects.counts, 0.5)
