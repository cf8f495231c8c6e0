"""Fast filters of the classical segmenter (OpenCV and numba), each equal to the scipy.ndimage /
scikit-image call it stands for, exactly or to float32 rounding (tests/test_segment_fast.py).

Exact: `fill_holes` (`binary_fill_holes`, 2-D cross), `binary_open` (`binary_opening`, cross),
`median3` (`median_filter(size=3, mode="reflect")` of a float image), `label_maximum`
(`ndimage.maximum`), `remove_small`, `label4` (4-connected components; numbering differs from
`ndimage.label`). To float32 rounding (~1e-6 relative): `gaussian` (`gaussian_filter`, mode
"reflect", truncate 4), `edt` (`distance_transform_edt`), `sobel` (`skimage.filters.sobel`),
`box5` (`uniform_filter(size=5, mode="reflect")`), `zoom_grid` (`ndimage.zoom(order=1,
mode="nearest", grid_mode=True)`), `zoom_corners` (`ndimage.zoom(order=1)`, corners aligned).
"""

from __future__ import annotations

import functools
import threading

import cv2
import numba
import numpy as np
from scipy import ndimage as ndi

from ._kernels import label_boxes, label_max, lookup

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
_LOCK = threading.Lock()
_ACTIVE = [0, None]  # calls inside `one_cv2_thread`, OpenCV's thread count before the first


def one_cv2_thread(func):
    """Run ``func`` with OpenCV single-threaded (restored after the last concurrent call returns).

    Parallelism is the caller's (cellkit runs fields in parallel tasks); OpenCV's own thread pool on
    top oversubscribes the cores: on a busy 2-core machine it made a field 25 % slower in wall time
    and 8 % in CPU time. Results do not depend on the thread count."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with _LOCK:
            if _ACTIVE[0] == 0:
                _ACTIVE[1] = cv2.getNumThreads()
                cv2.setNumThreads(1)
            _ACTIVE[0] += 1
        try:
            return func(*args, **kwargs)
        finally:
            with _LOCK:
                _ACTIVE[0] -= 1
                if _ACTIVE[0] == 0:
                    cv2.setNumThreads(_ACTIVE[1])

    return wrapper


def _u8(mask: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(mask, dtype=bool).view(np.uint8)


def label4(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of an (H, W) bool mask: (int32 labels, number of components)."""
    n, labels = cv2.connectedComponents(_u8(mask), connectivity=4, ltype=cv2.CV_32S)
    return labels, n - 1


def components(mask: np.ndarray, connectivity: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of an (H, W) bool mask: int32 labels 0..n and their (n + 1, 5) boxes and
    areas (OpenCV's stats layout: x, y, width, height, area), faster than OpenCV's own stats."""
    n, labels = cv2.connectedComponents(_u8(mask), connectivity=connectivity, ltype=cv2.CV_32S)
    return labels, label_boxes(labels, n - 1)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: ``mask`` with every background region not 4-connected to the image border set
    (OpenCV's flood fill of the background from outside a 1-px frame)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or min(mask.shape) == 0:
        return ndi.binary_fill_holes(mask)
    framed = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
    framed[1:-1, 1:-1] = mask
    cv2.floodFill(framed, None, (0, 0), 2, flags=4)  # the background reachable from the border -> 2
    return framed[1:-1, 1:-1] != 2


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 4-connected components of an (H, W) bool mask under ``min_area`` pixels."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or min(mask.shape) == 0:
        labels, _ = ndi.label(mask)
        return (np.bincount(labels.ravel()) >= min_area)[labels] & mask
    labels, _ = label4(mask)
    keep = np.bincount(labels.ravel()) >= min_area
    keep[0] = False
    return lookup(labels, keep)


def binary_open(mask: np.ndarray) -> np.ndarray:
    """`scipy.ndimage.binary_opening` with the 3 x 3 cross (= ``morphology.disk(1)``), outside = 0."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or min(mask.shape) == 0:
        return ndi.binary_opening(mask)
    eroded = cv2.erode(_u8(mask), _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.dilate(eroded, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)


def gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian of an (H, W) image, float32; scipy's kernel support (radius int(4 sigma + 0.5)) and
    its "reflect" border."""
    image = np.ascontiguousarray(image, np.float32)
    k = 2 * int(4.0 * sigma + 0.5) + 1
    return cv2.GaussianBlur(image, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def edt(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each pixel of an (H, W) bool mask to the nearest background pixel
    (0 outside the mask), float32. A mask without background gets scipy's answer."""
    mask = np.asarray(mask, bool)
    if mask.all():
        return ndi.distance_transform_edt(mask).astype(np.float32)
    return cv2.distanceTransform(_u8(mask), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def sobel(image: np.ndarray) -> np.ndarray:
    """`skimage.filters.sobel` of an (H, W) image: sqrt((gx**2 + gy**2) / 2), float32."""
    image = np.ascontiguousarray(image, np.float32)
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3, scale=0.25, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3, scale=0.25, borderType=cv2.BORDER_REFLECT)
    return np.sqrt((gx * gx + gy * gy) / 2)


def box5(image: np.ndarray) -> np.ndarray:
    """5 x 5 mean of an (H, W) float32 image, "reflect" border."""
    return cv2.blur(np.ascontiguousarray(image, np.float32), (5, 5), borderType=cv2.BORDER_REFLECT)


def zoom_grid(grid: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of an (h, w) grid by an integer ``factor``, pixel centres aligned and the
    edges held (``ndimage.zoom(grid, factor, order=1, mode="nearest", grid_mode=True)``), float32."""
    h, w = grid.shape
    return cv2.resize(np.ascontiguousarray(grid, np.float32), (w * factor, h * factor), interpolation=cv2.INTER_LINEAR)


@numba.njit(cache=True, nogil=True)
def _zoom_corners(small, out_h, out_w):
    h, w = small.shape
    out = np.empty((out_h, out_w), np.float32)
    fy = (h - 1) / (out_h - 1) if out_h > 1 else 0.0
    fx = (w - 1) / (out_w - 1) if out_w > 1 else 0.0
    x0 = np.empty(out_w, np.int64)
    wx = np.empty(out_w)
    for j in range(out_w):
        x = j * fx
        k = min(int(x), w - 2) if w > 1 else 0
        x0[j], wx[j] = k, x - k
    for i in range(out_h):
        y = i * fy
        k = min(int(y), h - 2) if h > 1 else 0
        wy = y - k
        k1 = k + 1 if h > 1 else k
        for j in range(out_w):
            a = x0[j]
            b = a + 1 if w > 1 else a
            top = small[k, a] * (1 - wx[j]) + small[k, b] * wx[j]
            bottom = small[k1, a] * (1 - wx[j]) + small[k1, b] * wx[j]
            out[i, j] = top * (1 - wy) + bottom * wy
    return out


def zoom_corners(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (h, w) image to ``shape``, corner pixels aligned (``ndimage.zoom(order=1)``
    to that shape), float32."""
    return _zoom_corners(np.ascontiguousarray(small, np.float64), int(shape[0]), int(shape[1]))


def _med3(a, b, c):
    """Elementwise median of three arrays (min/max only: exact)."""
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def median3(image: np.ndarray) -> np.ndarray:
    """3 x 3 median of an (H, W) float image, borders mirrored (scipy's ``mode="reflect"``); same dtype.

    float32: OpenCV's median (its replicated border equals the mirrored one for a 3 x 3 window).
    Other floats: each column of three is sorted (low, middle, high); the median of the nine is the
    median of (largest low, median middle, smallest high) over three neighbouring columns: min / max
    only, so the result is one of the nine values, exactly.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype.kind != "f" or not np.isfinite(image).all():
        return ndi.median_filter(image, size=3, mode="reflect")
    if image.dtype == np.float32:
        return cv2.medianBlur(np.ascontiguousarray(image), 3)
    padded = np.pad(image, 1, mode="symmetric")  # scipy's "reflect": d c b a | a b c d
    a, b, c = padded[:-2], padded[1:-1], padded[2:]
    low, high = np.minimum(np.minimum(a, b), c), np.maximum(np.maximum(a, b), c)
    middle = _med3(a, b, c)
    largest_low = np.maximum(np.maximum(low[:, :-2], low[:, 1:-1]), low[:, 2:])
    smallest_high = np.minimum(np.minimum(high[:, :-2], high[:, 1:-1]), high[:, 2:])
    return _med3(largest_low, _med3(middle[:, :-2], middle[:, 1:-1], middle[:, 2:]), smallest_high)


def label_maximum(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """(n,) maximum of ``values`` over each label 1..n of ``labels`` (same shape); labels absent: 0,
    as `scipy.ndimage.maximum` gives."""
    values = np.asarray(values)
    peak = label_max(np.ascontiguousarray(values).ravel(), np.ascontiguousarray(labels).ravel(), int(n))
    return peak.astype(np.result_type(values.dtype, np.float32))


def percentile(values: np.ndarray, q) -> np.ndarray | float:
    """``numpy.percentile(values, q)`` (linear interpolation) of finite values, float64, from exact
    order statistics (`order_stats`) instead of a partition of a copy."""
    from ._kernels import order_stats

    values = np.ascontiguousarray(values).ravel()
    qs = np.atleast_1d(np.asarray(q, np.float64))
    if values.size == 0:
        raise ValueError("percentile of an empty array")
    if values.dtype.kind not in "f":
        values = values.astype(np.float64)
    virtual = (values.size - 1) * qs / 100
    low = np.floor(virtual).astype(np.int64)
    high = np.minimum(low + 1, values.size - 1)
    ranks = np.unique(np.concatenate([low, high]))
    stats = dict(zip(ranks.tolist(), order_stats(values, ranks)))
    a, b = np.array([stats[k] for k in low]), np.array([stats[k] for k in high])
    t = virtual - low
    out = np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)  # numpy's _lerp
    return out if np.ndim(q) else float(out[0])


def expand_labels(labels: np.ndarray, distance: int) -> np.ndarray:
    """`skimage.segmentation.expand_labels` of (H, W) integer labels by ``distance`` px, int32: each
    background pixel within ``distance`` of a label takes the label of its nearest labelled pixel
    (OpenCV's 5 x 5 chamfer propagation finds that pixel, the Euclidean distance to it decides;
    where two labels are nearly equidistant either may win)."""
    from ._kernels import nearest_within

    labels = np.ascontiguousarray(labels)
    if labels.ndim != 2 or not labels.any():
        return np.asarray(labels, np.int32).copy()
    background = (labels == 0).view(np.uint8)
    _, nearest = cv2.distanceTransformWithLabels(background, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    return nearest_within(labels.astype(np.int32, copy=False), nearest, int(distance) ** 2)


def gaussian_wide(image: np.ndarray, sigma: float) -> np.ndarray:
    """A wide Gaussian (sigma >= 4 px) of an (H, W) image computed at half resolution, float32: the
    image mirrored by the kernel's radius (scipy's "reflect"), 2 x 2 means, a Gaussian whose variance
    plus that of the averaging and the bilinear upsampling ((2**2 - 1) / 4 px**2) makes ``sigma``,
    upsampling. Within ~1e-3 of `gaussian` on smooth images, relative to their range (a few pixels
    in 10,000 change side of a local threshold); narrower sigmas use `gaussian`."""
    image = np.ascontiguousarray(image, np.float32)
    if sigma < 4 or min(image.shape) < 16:
        return gaussian(image, sigma)
    h, w = image.shape
    m = 2 * (int(4 * sigma + 0.5) // 2 + 1)  # even, beyond the kernel's radius
    if m >= min(h, w):
        return gaussian(image, sigma)
    padded = cv2.copyMakeBorder(image, m, m + h % 2, m, m + w % 2, cv2.BORDER_REFLECT)
    small = cv2.resize(padded, (padded.shape[1] // 2, padded.shape[0] // 2), interpolation=cv2.INTER_AREA)
    small = gaussian(small, np.sqrt(sigma ** 2 - 0.75) / 2)
    up = cv2.resize(small, (padded.shape[1], padded.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(up[m:m + h, m:m + w])
