"""Classical (CellProfiler-style) segmentation: nuclei from DNA, cells by seeded watershed.

Nuclei (IdentifyPrimaryObjects): by default (``threshold_method="local"``) percentile
normalisation, smoothing, a local threshold floored by a global one (robust to uneven
illumination and to nuclei of very different brightness), declumping by shape with a seeded
watershed, size filters. The global methods (``otsu``, ``li``, ``log_otsu``) remove the
background with an opening, threshold once and declump by shape and intensity.
Cells (IdentifySecondaryObjects, "Propagation"-like): a seeded watershed from the nuclei over
the cytoplasm channels, limited to the thresholded cytoplasm foreground.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import segmentation
from skimage.feature import peak_local_max

from ._fast import binary_open, components, edt, fill_holes, gaussian, gaussian_wide, one_cv2_thread
from ._convex import convex_areas
from ._kernels import lookup
from ._peaks import object_peaks
from .classical_cells import cytoplasm_foreground, segment_cells
from .objects import relabel_raster
from .params import ClassicalParams
from .thresholds import (THRESHOLD_METHODS, _as_float, _otsu, auto_threshold, li, percentile_normalize, remove_background,
                         remove_small)

__all__ = ["ClassicalParams", "THRESHOLD_METHODS", "auto_threshold", "cytoplasm_foreground", "declump",
           "diameter_from_mask", "estimate_nucleus_diameter", "foreground_diameter", "percentile_normalize",
           "remove_background", "remove_small", "segment_cells", "segment_nuclei", "segment_nuclei_local"]


@one_cv2_thread
def estimate_nucleus_diameter(dna: np.ndarray, method: str = "otsu") -> float:
    """Typical nucleus diameter (px), 0 if no foreground.

    Twice the median height of the distance-transform peaks of the (hole-filled) Otsu foreground:
    a clump of touching nuclei gives one peak per nucleus at about its radius, so clumps do not
    inflate the estimate the way object areas do.
    """
    image = gaussian(_as_float(dna, "DNA"), 2.0)
    image = remove_background(image, max(image.shape) / 4)
    mask = fill_holes(ndi.binary_closing(image > auto_threshold(image, method)))
    mask = remove_small(binary_open(mask), 15)
    distance = edt(mask)
    peaks = peak_local_max(distance, min_distance=3, threshold_abs=1.5, exclude_border=False)
    if len(peaks) == 0:
        return 0.0
    return float(2 * np.median(distance[tuple(peaks.T)]) + 1)


@one_cv2_thread
def segment_nuclei(dna: np.ndarray, params: ClassicalParams = ClassicalParams()) -> np.ndarray:
    """Segment nuclei in a DNA image.

    Parameters
    ----------
    dna
        (H, W) integer or float image.
    params
        See `ClassicalParams`.

    Returns
    -------
    (H, W) uint32 labels 1..N (0 background), numbered in raster order; all 0 when the field has
    no foreground above its noise (see ``min_snr``).
    """
    image = _as_float(dna, "DNA")
    if image.max() == image.min():
        return np.zeros(image.shape, np.uint32)
    if not params.min_snr:
        return _segment_nuclei(image, params)
    from .empty import drop_faint, evidence_maps, has_foreground

    field, local = evidence_maps(dna)
    if not has_foreground(field, params.min_nucleus_area, params.min_snr):
        return np.zeros(image.shape, np.uint32)
    return drop_faint(_segment_nuclei(image, params), local, params.min_snr)


def _segment_nuclei(image: np.ndarray, params: ClassicalParams) -> np.ndarray:
    if params.threshold_method == "local":
        return segment_nuclei_local(image, params)
    diameter = params.nucleus_diameter or estimate_nucleus_diameter(image)
    if diameter <= 0:
        return np.zeros(image.shape, np.uint32)
    smooth = gaussian(image, max(0.5, params.smoothing * diameter))
    corrected = remove_background(smooth, params.background_radius * diameter)
    threshold = auto_threshold(corrected, params.threshold_method) * params.threshold_scale
    mask = corrected > threshold
    mask = fill_holes(binary_open(mask))
    # declump: seeds at maxima of distance x intensity (shape and intensity, as CellProfiler's "Shape")
    relief = gaussian(edt(mask), max(1.0, 0.1 * diameter)) * \
        np.sqrt(np.clip(corrected / max(threshold, 1e-6), 0, 4))
    labels = declump(relief, mask, max(2, int(params.declump_min_distance * diameter)))
    return _size_filter(labels, params.min_nucleus_area, params.max_nucleus_area)


def diameter_from_mask(mask: np.ndarray, min_area: int = 15, min_solidity: float = 0.9,
                       fragment_fraction: float = 0.2, max_fraction: float = 0.1) -> float:
    """Typical object diameter (px) from the areas of a foreground mask's components, 0 if none.

    Components over ``max_fraction`` of the image (background blobs) or under ``min_area`` px are
    ignored; convex ones (solidity > ``min_solidity``, i.e. not clumps) are preferred. Fragments
    smaller than ``fragment_fraction`` x the area-weighted median area are dropped (textured
    large nuclei break into many small pieces), then the median area gives the diameter.
    """
    labels, stats = components(mask, connectivity=8)  # as measure.label's
    area = stats[:, 4].astype(np.int64)
    kept = np.flatnonzero((area >= min_area) & (area <= max_fraction * mask.size))
    kept = kept[kept > 0]
    solidity = area[kept] / np.maximum(convex_areas(labels, stats, kept), 1)  # = regionprops' solidity
    areas = area[kept][solidity > min_solidity].astype(float)
    if not len(areas):
        areas = area[kept].astype(float)
    if not len(areas):
        return 0.0
    ordered = np.sort(areas)
    cumulative = np.cumsum(ordered)
    weighted_median = ordered[np.searchsorted(cumulative, cumulative[-1] / 2)]
    return float(2 * np.sqrt(np.median(areas[areas >= fragment_fraction * weighted_median]) / np.pi))


@one_cv2_thread
def foreground_diameter(dna: np.ndarray) -> float:
    """Typical nucleus diameter (px) of an (H, W) image before any segmentation, 0 if it has no
    foreground: `diameter_from_mask` on the Otsu foreground of the percentile-normalized image
    smoothed by 1 px (as `segment_nuclei_local` sizes its nuclei). ``diameter="auto"`` of the
    Cellpose backend starts from it (docs/segmentation.md: its error on held-out DSB2018 images)."""
    image = _smoothed(dna)
    return 0.0 if image.max() == image.min() else _otsu_diameter(image)


def _smoothed(dna: np.ndarray) -> np.ndarray:
    return gaussian(percentile_normalize(_as_float(dna, "DNA")), 1.0)


def _otsu_diameter(smoothed: np.ndarray) -> float:
    return diameter_from_mask(fill_holes(binary_open(smoothed > _otsu(smoothed))))


@one_cv2_thread
def segment_nuclei_local(dna: np.ndarray, params: ClassicalParams = ClassicalParams()) -> np.ndarray:
    """Nuclei by a local threshold, for heterogeneous real images (``threshold_method="local"``).

    Percentile normalisation, Gaussian smoothing (sigma 1 px); diameter from `diameter_from_mask`
    on the Otsu foreground unless given; foreground = pixels above the Gaussian-weighted local
    mean over a window of ``local_block`` diameters and above ``local_floor`` x the Li threshold
    (so dim nuclei beside bright ones are kept, flat background is not); opening, hole filling;
    seeds at distance-transform maxima at least ``declump_min_distance`` diameters apart; seeded
    watershed; objects under ``min_nucleus_area`` px or a quarter of the typical area dropped.

    Returns (H, W) uint32 labels 1..N in raster order.
    """
    image = _smoothed(dna)
    if image.max() == image.min():
        return np.zeros(image.shape, np.uint32)
    diameter = params.nucleus_diameter or _otsu_diameter(image)
    if diameter <= 0:
        return np.zeros(image.shape, np.uint32)
    block = max(15, int(params.local_block * diameter) | 1)
    floor = li(image) * params.local_floor * params.threshold_scale
    # skimage's threshold_local(image, block, method="gaussian"): a Gaussian of sigma (block - 1) / 6
    mask = (image > gaussian_wide(image, (block - 1) / 6.0)) & (image > floor)
    mask = fill_holes(binary_open(mask))
    min_area = max(params.min_nucleus_area, int(0.25 * np.pi * diameter ** 2 / 4))
    mask = remove_small(mask, min_area)
    relief = gaussian(edt(mask), max(1.0, 0.1 * diameter))
    labels = declump(relief, mask, max(2, int(params.declump_min_distance * diameter)))
    return _size_filter(labels, min_area, params.max_nucleus_area)


def declump(relief: np.ndarray, mask: np.ndarray, min_distance: int) -> np.ndarray:
    """Split touching objects of ``mask`` (H, W) bool: seeds at the maxima of ``relief`` (H, W) float at least
    ``min_distance`` px apart (one set per connected component), then a seeded watershed of ``-relief``.
    Returns (H, W) int32 labels (not yet size-filtered)."""
    peaks = object_peaks(relief, mask, min_distance)  # = peak_local_max(relief, min_distance, labels=label(mask))
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return segmentation.watershed(-relief, markers, mask=mask)


def _size_filter(labels: np.ndarray, min_area: int, max_area: int | None) -> np.ndarray:
    """Drop objects outside [min_area, max_area] px and number the rest 1..N in raster order."""
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    if max_area is not None:
        keep &= areas <= max_area
    keep[0] = False
    kept = np.where(keep, np.arange(keep.size), 0)
    return relabel_raster(lookup(labels, kept))  # = relabel_raster(np.where(keep[labels], labels, 0))
