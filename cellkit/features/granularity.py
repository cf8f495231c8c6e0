"""Granularity: CellProfiler's MeasureGranularity spectrum, per object.

The spectrum is a property of the whole image, so it is computed once per channel
(`granularity_spectrum`) and then averaged over the objects of every compartment
(`granularity_features`), as CellProfiler does:

1. subsample the image by ``subsample`` (bilinear, ``scipy.ndimage.map_coordinates``);
2. remove the background: a grey opening with a disk of radius ``element_size`` on a further
   ``image_sample``-subsampled copy, mapped back and subtracted (negatives clipped to 0);
3. ``length`` times: erode with the 4-neighbour cross, reconstruct by dilation under the
   background-subtracted image (an opening by reconstruction);
4. per object, step ``k`` is ``100 * (mean_{k-1} - mean_k) / mean_0`` where ``mean_k`` is the
   object's mean of reconstruction ``k`` mapped back to full resolution (bilinear) and ``mean_0``
   the object's mean of the original image (not background-subtracted).

The reconstructions use one max-tree of the image (``skimage.morphology.max_tree``, 4-connected):
each is then two numba passes over the pixels (`_reconstruct_from_tree`), and gives exactly the
values of ``skimage.morphology.reconstruction`` (tested).
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.ndimage as ndi
import scipy.sparse
import skimage.morphology

from ._objects import Objects


@numba.njit(cache=True, nogil=True)
def _reconstruct_from_tree(marker, levels, parent, order, out):
    """Grey reconstruction by dilation of ``marker`` (<= ``levels``) under ``levels``, from the
    max-tree of ``levels`` (flat arrays; ``parent``, ``order``: `skimage.morphology.max_tree`).

    A component (max-tree node) at level l is reconstructed up to l iff the marker reaches l
    somewhere inside it; a pixel takes the level of its deepest such component. Two passes over
    the pixels; the result holds only values of ``levels``, as the classical algorithms.
    """
    n = marker.size
    reach = marker.copy()  # max of the marker over each pixel's subtree
    for i in range(n - 1, 0, -1):
        p = order[i]
        q = parent[p]
        if reach[p] > reach[q]:
            reach[q] = reach[p]
    for i in range(n):
        p = order[i]
        q = parent[p]
        if p == q:  # the root: the marker reaches the image minimum
            out[p] = levels[p]
        elif levels[q] == levels[p]:  # same component as its canonical pixel
            out[p] = out[q]
        elif reach[p] >= levels[p]:
            out[p] = levels[p]
        else:
            out[p] = out[q]
    return out


def _resample(image: np.ndarray, factor: float) -> np.ndarray:
    """CellProfiler's subsampling: bilinear samples at ``arange(int(shape * factor)) / factor``."""
    if factor >= 1:
        return image.copy()
    new = (np.array(image.shape) * factor).astype(int)
    i, j = np.mgrid[0:new[0], 0:new[1]].astype(float) / factor
    return ndi.map_coordinates(image, (i, j), order=1)


def granularity_spectrum(image: np.ndarray, *, subsample: float = 0.25, image_sample: float = 0.25,
                         element_size: int = 10, length: int = 16, return_pixels: bool = False):
    """The opening-by-reconstruction series of one image, at the subsampled resolution.

    Parameters
    ----------
    image
        (H, W) float64 on CellProfiler's 0-1 scale; NaN pixels are taken as 0.
    subsample, image_sample, element_size, length
        CellProfiler's subsampling factor, background subsampling factor, background structuring
        element radius and spectrum length (defaults: 0.25, 0.25, 10, 16).

    Returns
    -------
    (length, h, w) float64 reconstructions (h, w: subsampled shape), or None when subsampling leaves
    an axis shorter than 2 pixels (no spectrum: NaN features). With ``return_pixels``: also the
    (h, w) background-subtracted subsampled image they were reconstructed under (or None).
    """
    if not (0 < subsample <= 1 and 0 < image_sample <= 1) or element_size < 1 or length < 1:
        raise ValueError(f"granularity needs 0 < subsample, image_sample <= 1, element_size >= 1, length >= 1; "
                         f"got {subsample}, {image_sample}, {element_size}, {length}")
    image = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
    orig = np.array(image.shape)
    new = (orig * subsample).astype(int) if subsample < 1 else orig
    if (new < 2).any():
        return (None, None) if return_pixels else None
    pixels = _resample(image, subsample)
    if image_sample < 1:
        back_shape = new * image_sample
        i, j = np.mgrid[0:back_shape[0], 0:back_shape[1]].astype(float) / image_sample
        back = ndi.map_coordinates(pixels, (i, j), order=1)
    else:
        back, back_shape = pixels, new
    disk = skimage.morphology.disk(element_size, dtype=bool)
    back = skimage.morphology.dilation(skimage.morphology.erosion(back, footprint=disk), footprint=disk)
    if image_sample < 1:
        i, j = np.mgrid[0:new[0], 0:new[1]].astype(float)
        i *= (back_shape[0] - 1) / (new[0] - 1)
        j *= (back_shape[1] - 1) / (new[1] - 1)
        back = ndi.map_coordinates(back, (i, j), order=1)
    pixels = np.maximum(pixels - back, 0)
    cross = skimage.morphology.disk(1, dtype=bool)
    parent, order = skimage.morphology.max_tree(pixels, connectivity=1)
    parent, order, levels = parent.ravel(), order.ravel(), pixels.ravel()
    out = np.empty((length,) + pixels.shape)
    ero = pixels
    for k in range(length):
        ero = skimage.morphology.erosion(ero, footprint=cross)
        _reconstruct_from_tree(ero.ravel(), levels, parent, order, out[k].reshape(-1))
    return (out, pixels) if return_pixels else out


def image_granularity(spectrum: np.ndarray | None, pixels: np.ndarray | None) -> np.ndarray:
    """CellProfiler's per-image granularity (``Image_Granularity_<k>_<Channel>``, no mask): step ``k`` is
    ``100 * (mean_{k-1} - mean_k) / mean_0``, means over the whole subsampled image, ``mean_0`` that of
    the background-subtracted image ``pixels`` and ``mean_k`` that of reconstruction ``k`` of
    ``spectrum`` (both from `granularity_spectrum` with ``return_pixels=True``). (length,) float64; NaN
    without a spectrum."""
    if spectrum is None:
        return np.full(0 if pixels is None else len(pixels), np.nan)
    means = np.concatenate([[pixels.mean()], spectrum.reshape(len(spectrum), -1).mean(axis=1)])
    return (means[:-1] - means[1:]) * 100 / max(means[0], np.finfo(float).eps)


def _restore_operator(objects: Objects, small_shape: tuple[int, int]):
    """(N, h*w) sparse matrix: row o sums, over object o's pixels, the bilinear weights of the
    subsampled pixels it is restored from (CellProfiler's restore step, as cp_measure's fused
    operator); pixels mapped just outside the grid by round-off weigh 0, as map_coordinates gives
    them. Built once per compartment and kept on ``objects``."""
    key = ("_granularity_restore", tuple(small_shape))
    if key in objects.__dict__:
        return objects.__dict__[key]
    h, w = objects.shape
    nh, nw = small_shape
    r = objects.rows * (float(nh - 1) / float(h - 1)) if h > 1 else np.zeros(objects.rows.size)
    c = objects.cols * (float(nw - 1) / float(w - 1)) if w > 1 else np.zeros(objects.cols.size)
    inside = (r >= 0) & (r <= nh - 1) & (c >= 0) & (c <= nw - 1)
    r, c, seg = r[inside], c[inside], objects.seg[inside]
    r0, c0 = np.floor(r).astype(np.int64), np.floor(c).astype(np.int64)
    fr, fc = r - r0, c - c0
    r1, c1 = np.minimum(r0 + 1, nh - 1), np.minimum(c0 + 1, nw - 1)
    cols = np.concatenate([r0 * nw + c0, r0 * nw + c1, r1 * nw + c0, r1 * nw + c1])
    weights = np.concatenate([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc])
    op = scipy.sparse.coo_matrix((weights, (np.tile(seg, 4), cols)), shape=(objects.n, nh * nw)).tocsr()
    objects.__dict__[key] = op
    return op


def granularity_features(objects: Objects, image: np.ndarray, spectrum: np.ndarray | None, *,
                         length: int = 16) -> dict[str, np.ndarray]:
    """``Granularity_<k>_{c}`` (k = 1..length) of every object, from the image's `granularity_spectrum`.

    Parameters
    ----------
    objects
        The grouped pixels of one compartment.
    image
        (H, W) float64 original intensities (the object means ``mean_0``; NaN pixels count as 0).
    spectrum
        (length, h, w) from `granularity_spectrum` of the same image (None: all NaN).

    Returns
    -------
    dict ``"Granularity_<k>_{c}"`` -> (N,) float64 percentages; NaN for absent objects.
    """
    n = objects.n
    if spectrum is None or n == 0:
        return {f"Granularity_{k}_{{c}}": np.full(n, np.nan) for k in range(1, length + 1)}
    restore = _restore_operator(objects, spectrum.shape[1:])
    means = np.asarray(restore @ spectrum.reshape(len(spectrum), -1).T)  # (N, length) sums
    with np.errstate(invalid="ignore", divide="ignore"):
        means = means / objects.counts[:, None]
    values = np.nan_to_num(image.ravel()[objects.flat], nan=0.0)
    current = objects.mean(values)
    start = np.maximum(current, np.finfo(float).eps)
    out = {}
    for k in range(len(spectrum)):
        new = means[:, k]
        out[f"Granularity_{k + 1}_{{c}}"] = (current - new) * 100 / start
        current = new
    return out
