"""Faster equivalents of three scipy.ndimage calls of the classical segmenter, with identical results.

- `fill_holes`: `scipy.ndimage.binary_fill_holes` (2-D, default cross structure) by labelling the
  background once instead of dilating from the border until it stops (tests compare them).
- `median3`: `scipy.ndimage.median_filter(image, size=3, mode="reflect")` of a float image, by a
  min / max network over the 9 neighbours (the median is one of them: exact).
- `label_maximum`: `scipy.ndimage.maximum(values, labels, index=1..n)` in one pass (no sort).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: ``mask`` with every background region not 4-connected to the image border set."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or min(mask.shape) == 0:
        return ndi.binary_fill_holes(mask)
    background, _ = ndi.label(~mask)  # 4-connected, as binary_fill_holes' default structure
    edge = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    open_to_edge = np.zeros(int(background.max()) + 1, bool)
    open_to_edge[edge] = True
    open_to_edge[0] = False  # label 0 = the mask itself
    return ~open_to_edge[background]


def _med3(a, b, c):
    """Elementwise median of three arrays (min/max only: exact)."""
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def median3(image: np.ndarray) -> np.ndarray:
    """3 x 3 median of an (H, W) float image, borders mirrored (scipy's ``mode="reflect"``); same dtype.

    Each column of three is sorted (low, middle, high); the median of the nine is the median of
    (largest low, median middle, smallest high) over three neighbouring columns: min / max only,
    so the result is one of the nine values, exactly.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype.kind != "f" or not np.isfinite(image).all():
        return ndi.median_filter(image, size=3, mode="reflect")
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
    foreground = labels > 0
    index = labels[foreground].astype(np.intp)
    peak = np.full(n + 1, -np.inf, dtype=np.result_type(values.dtype, np.float32))
    np.maximum.at(peak, index, values[foreground])
    peak = peak[1:]
    peak[np.isneginf(peak)] = 0
    return peak
