"""Image conditioning and automatic thresholds shared by the classical nucleus and cell steps."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import filters

from ._fast import percentile, zoom_corners
from ._fast import remove_small as _remove_small
from ._kernels import otsu_of, threshold_li


def _as_float(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D image, got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)) \
            or image.dtype == np.bool_:
        raise TypeError(f"{name}: unsupported dtype {image.dtype}; expected an integer or float image")
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise ValueError(f"{name}: image has NaN or infinite values")
    return image


def remove_background(image: np.ndarray, radius: float) -> np.ndarray:
    """Subtract a smooth background estimated by a grey opening (rolling ball-like).

    The opening with a square larger than the objects removes them; it is computed on an image
    downsampled by ``radius / 4`` for speed, then smoothed and upsampled. Returns float32 (H, W) >= 0.
    """
    step = max(1, int(radius // 4))
    small = image[::step, ::step]
    size = max(3, int(2 * radius / step) | 1)
    bg = ndi.grey_opening(ndi.minimum_filter(small, 3), size=size)
    bg = ndi.uniform_filter(bg, size=size)
    # the shape ndimage.zoom(bg, image.shape / small.shape, order=1) gives, then cropped or edge-padded
    zoomed = [round(n * (full / n)) for n, full in zip(small.shape, image.shape)]
    bg = zoom_corners(bg, zoomed)[: image.shape[0], : image.shape[1]]
    if bg.shape != image.shape:
        bg = np.pad(bg, [(0, image.shape[0] - bg.shape[0]), (0, image.shape[1] - bg.shape[1])], mode="edge")
    return np.maximum(image - bg, 0)


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 4-connected components of a boolean mask under ``min_area`` pixels."""
    return _remove_small(mask, min_area)


THRESHOLD_METHODS = ("otsu", "li", "log_otsu", "local")


def _otsu(values: np.ndarray) -> float:
    """`skimage.filters.threshold_otsu` (256 bins over the values' range) of finite float values."""
    values = np.ascontiguousarray(values).ravel()
    if values.dtype.kind != "f" or values.size == 0 or not np.isfinite(values.min() + values.max()):
        return float(filters.threshold_otsu(values))
    return float(otsu_of(values, 256))


def auto_threshold(image: np.ndarray, method: str = "otsu") -> float:
    """Automatic threshold of a background-removed image (>= 0).

    ``li``: minimum cross-entropy (CellProfiler's default), less pulled up than Otsu by a few very
    bright objects; ``otsu``; ``log_otsu``: Otsu on log intensities. ``inf`` for a constant image.
    """
    if image.size == 0 or image.min() == image.max():
        return np.inf
    if method == "otsu":
        return _otsu(image)
    if method == "li":
        return li(image)
    if method == "local":
        raise ValueError("'local' is a local threshold: it has no single value (see segment_nuclei_local)")
    if method == "log_otsu":
        floor = max(float(np.percentile(image, 1)), 1e-3 * float(image.max()))
        return float(np.exp(auto_threshold(np.log(np.maximum(image, floor)), "otsu")))
    raise ValueError(f"unknown threshold method {method!r}; choose one of {', '.join(THRESHOLD_METHODS)}")


def li(image: np.ndarray) -> float:
    """Li's minimum cross-entropy threshold of a finite, non-constant image (`skimage.filters.threshold_li`'s
    iteration, each step one pass). It stops when the threshold moves by under 1e-7 of the image's
    range (skimage: half the smallest gap between its values, a full sort). Images of over 2**18
    pixels start from the threshold of every 4th pixel, which saves most of the passes over them."""
    values = np.ascontiguousarray(image).ravel()
    tolerance = 1e-7 * (float(values.max()) - float(values.min()))
    start = np.nan
    if values.size > 2 ** 18:
        sample = np.ascontiguousarray(values[::4])
        if sample.min() < sample.max():
            start = threshold_li(sample, tolerance)
    return float(threshold_li(values, tolerance, start))


def percentile_normalize(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Scale so that the ``low`` / ``high`` percentiles map to 0 / 1 (clipped to [0, 1.5]), float32."""
    image = np.asarray(image, np.float32)
    lo, hi = percentile(image, [low, high])
    return np.clip((image - lo) / max(float(hi - lo), 1e-6), 0, 1.5).astype(np.float32)
