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

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation
from skimage.feature import peak_local_max

from .objects import relabel_raster


@dataclass(frozen=True)
class ClassicalParams:
    """Parameters of the classical segmenter (pixel units).

    nucleus_diameter
        Typical nucleus diameter in px; None estimates it from the thresholded DNA image.
    min_nucleus_area, max_nucleus_area
        Nuclei outside [min, max] pixels are dropped (max None: no upper bound).
    min_cell_area
        Cells under this many pixels are dropped together with their nucleus.
    smoothing
        Gaussian sigma as a fraction of the nucleus diameter (global methods; ``local`` uses 1 px).
    background_radius
        Radius of the background opening (uneven illumination), in nucleus diameters (global
        methods only).
    threshold_method
        Automatic threshold of the nuclei: ``li`` (minimum cross-entropy), ``otsu``, ``log_otsu``, or
        ``local`` (percentile normalisation, local Gaussian-weighted threshold over a window of
        ``local_block`` diameters floored at ``local_floor`` x the Li threshold, and a diameter
        estimated from component areas; see `segment_nuclei_local`). ``local`` suits heterogeneous
        real images (DSB2018) better; the global methods are exact on even, sparse fields.
    threshold_scale
        Multiplies the automatic threshold (``local``: its global floor) (lower: more permissive).
    local_block, local_floor
        ``local`` only: window of the local threshold in nucleus diameters, and its floor as a
        multiple of the Li threshold of the normalised image.
    declump_min_distance
        Minimum distance between seeds of one clump, as a fraction of the nucleus diameter.
    cell_threshold_scale
        Multiplies the automatic threshold of the cytoplasm foreground.
    compactness
        Watershed compactness of the cell propagation (0: pure intensity; larger: closer to Voronoi).
    min_snr
        Foreground evidence a field needs to have nuclei at all, and each nucleus needs at its
        peak, in standard deviations of the field's own (filtered) noise (`cellkit.segment.empty`);
        a field of noise only gives 0 nuclei. 0 disables the check.
    propagation
        Cytoplasm foreground of the cell propagation: ``local`` (per-cell thresholds, see
        `cytoplasm_foreground`; dim cells keep their cytoplasm) or ``global`` (one Otsu threshold
        for the field, as cellkit did before; dim cells shrink to their nucleus).
    cell_reach
        ``local`` only: how far a cell may extend beyond its nucleus for its own threshold, in
        nucleus diameters.
    background_sigmas
        ``local`` only: a per-cell threshold never falls below the background level plus this
        many robust standard deviations of the background.
    """

    nucleus_diameter: float | None = None
    min_nucleus_area: int = 15
    max_nucleus_area: int | None = None
    min_cell_area: int = 50
    smoothing: float = 0.08
    background_radius: float = 1.5
    threshold_method: str = "local"
    threshold_scale: float = 1.0
    declump_min_distance: float = 0.45
    cell_threshold_scale: float = 1.0
    compactness: float = 0.0
    propagation: str = "local"
    cell_reach: float = 1.5
    background_sigmas: float = 3.0
    local_block: float = 3.0
    local_floor: float = 0.8
    min_snr: float = 6.0

    def to_dict(self) -> dict:
        return asdict(self)


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
    bg = ndi.zoom(bg, (image.shape[0] / small.shape[0], image.shape[1] / small.shape[1]), order=1)
    bg = bg[: image.shape[0], : image.shape[1]]
    if bg.shape != image.shape:
        bg = np.pad(bg, [(0, image.shape[0] - bg.shape[0]), (0, image.shape[1] - bg.shape[1])], mode="edge")
    return np.maximum(image - bg, 0)


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop connected components of a boolean mask under ``min_area`` pixels."""
    labels, _ = ndi.label(mask)
    return (np.bincount(labels.ravel()) >= min_area)[labels] & mask


THRESHOLD_METHODS = ("otsu", "li", "log_otsu", "local")


def _otsu(values: np.ndarray) -> float:
    return float(filters.threshold_otsu(values))


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
        return float(filters.threshold_li(image))
    if method == "local":
        raise ValueError("'local' is a local threshold: it has no single value (see segment_nuclei_local)")
    if method == "log_otsu":
        floor = max(float(np.percentile(image, 1)), 1e-3 * float(image.max()))
        return float(np.exp(auto_threshold(np.log(np.maximum(image, floor)), "otsu")))
    raise ValueError(f"unknown threshold method {method!r}; choose one of {', '.join(THRESHOLD_METHODS)}")


def estimate_nucleus_diameter(dna: np.ndarray, method: str = "otsu") -> float:
    """Typical nucleus diameter (px), 0 if no foreground.

    Twice the median height of the distance-transform peaks of the (hole-filled) Otsu foreground:
    a clump of touching nuclei gives one peak per nucleus at about its radius, so clumps do not
    inflate the estimate the way object areas do.
    """
    image = ndi.gaussian_filter(_as_float(dna, "DNA"), 2.0)
    image = remove_background(image, max(image.shape) / 4)
    mask = ndi.binary_fill_holes(ndi.binary_closing(image > auto_threshold(image, method)))
    mask = remove_small(ndi.binary_opening(mask), 15)
    distance = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=3, threshold_abs=1.5, exclude_border=False)
    if len(peaks) == 0:
        return 0.0
    return float(2 * np.median(distance[tuple(peaks.T)]) + 1)


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
    smooth = ndi.gaussian_filter(image, max(0.5, params.smoothing * diameter))
    corrected = remove_background(smooth, params.background_radius * diameter)
    threshold = auto_threshold(corrected, params.threshold_method) * params.threshold_scale
    mask = corrected > threshold
    mask = ndi.binary_fill_holes(ndi.binary_opening(mask, morphology.disk(1)))
    # declump: seeds at maxima of distance x intensity (shape and intensity, as CellProfiler's "Shape")
    distance = ndi.distance_transform_edt(mask)
    relief = ndi.gaussian_filter(distance, max(1.0, 0.1 * diameter)) * \
        np.sqrt(np.clip(corrected / max(threshold, 1e-6), 0, 4))
    labels = declump(relief, mask, max(2, int(params.declump_min_distance * diameter)))
    return _size_filter(labels, params.min_nucleus_area, params.max_nucleus_area)


def percentile_normalize(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Scale so that the ``low`` / ``high`` percentiles map to 0 / 1 (clipped to [0, 1.5]), float32."""
    image = np.asarray(image, np.float32)
    lo, hi = np.percentile(image, [low, high])
    return np.clip((image - lo) / max(float(hi - lo), 1e-6), 0, 1.5).astype(np.float32)


def diameter_from_mask(mask: np.ndarray, min_area: int = 15, min_solidity: float = 0.9,
                       fragment_fraction: float = 0.2, max_fraction: float = 0.1) -> float:
    """Typical object diameter (px) from the areas of a foreground mask's components, 0 if none.

    Components over ``max_fraction`` of the image (background blobs) or under ``min_area`` px are
    ignored; convex ones (solidity > ``min_solidity``, i.e. not clumps) are preferred. Fragments
    smaller than ``fragment_fraction`` x the area-weighted median area are dropped (textured
    large nuclei break into many small pieces), then the median area gives the diameter.
    """
    props = [p for p in measure.regionprops(measure.label(mask))
             if min_area <= p.area <= max_fraction * mask.size]
    areas = np.array([p.area for p in props if p.solidity > min_solidity], float)
    if not len(areas):
        areas = np.array([p.area for p in props], float)
    if not len(areas):
        return 0.0
    ordered = np.sort(areas)
    cumulative = np.cumsum(ordered)
    weighted_median = ordered[np.searchsorted(cumulative, cumulative[-1] / 2)]
    return float(2 * np.sqrt(np.median(areas[areas >= fragment_fraction * weighted_median]) / np.pi))


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
    image = ndi.gaussian_filter(percentile_normalize(_as_float(dna, "DNA")), 1.0)
    if image.max() == image.min():
        return np.zeros(image.shape, np.uint32)
    diameter = params.nucleus_diameter or diameter_from_mask(
        ndi.binary_fill_holes(ndi.binary_opening(image > _otsu(image))))
    if diameter <= 0:
        return np.zeros(image.shape, np.uint32)
    block = max(15, int(params.local_block * diameter) | 1)
    floor = float(filters.threshold_li(image)) * params.local_floor * params.threshold_scale
    mask = (image > filters.threshold_local(image, block, method="gaussian")) & (image > floor)
    mask = ndi.binary_fill_holes(ndi.binary_opening(mask, morphology.disk(1)))
    min_area = max(params.min_nucleus_area, int(0.25 * np.pi * diameter ** 2 / 4))
    mask = remove_small(mask, min_area)
    relief = ndi.gaussian_filter(ndi.distance_transform_edt(mask), max(1.0, 0.1 * diameter))
    labels = declump(relief, mask, max(2, int(params.declump_min_distance * diameter)))
    return _size_filter(labels, min_area, params.max_nucleus_area)


def declump(relief: np.ndarray, mask: np.ndarray, min_distance: int) -> np.ndarray:
    """Split touching objects of ``mask`` (H, W) bool: seeds at the maxima of ``relief`` (H, W) float at least
    ``min_distance`` px apart (one set per connected component), then a seeded watershed of ``-relief``.
    Returns (H, W) int32 labels (not yet size-filtered)."""
    peaks = peak_local_max(relief, min_distance=min_distance, labels=measure.label(mask), exclude_border=False)
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
    return relabel_raster(np.where(keep[labels], labels, 0))



def _normalized_plane(channel: np.ndarray, radius: float, name: str) -> np.ndarray:
    """Smoothed, background-removed image scaled by its 99th percentile, float32 (H, W)."""
    plane = remove_background(ndi.gaussian_filter(_as_float(channel, name), 1.5), radius)
    scale = np.percentile(plane, 99)
    return plane / scale if scale > 0 else plane


def segment_cells(nuclei: np.ndarray, cytoplasm: list[np.ndarray],
                  params: ClassicalParams = ClassicalParams()) -> np.ndarray:
    """Grow cells from nuclei over the cytoplasm channels (seeded watershed, mask = foreground).

    The foreground is the mean of the normalized cytoplasm channels above a threshold (plus the
    nuclei): per cell (`cytoplasm_foreground`, ``params.propagation="local"``) or one Otsu
    threshold for the field (``"global"``). The watershed relief is the first channel's intensity (a cortical stain such as
    Actin is bright where cells touch) plus the gradient of the mean, so that boundaries follow
    both bright cortex and intensity edges.

    Parameters
    ----------
    nuclei
        (H, W) integer labels from `segment_nuclei`.
    cytoplasm
        One or more (H, W) images, the boundary stain first (Actin, then Tubulin).

    Returns
    -------
    (H, W) uint32 cell labels; cell k grows from nucleus k and contains it.
    """
    nuclei = np.asarray(nuclei)
    if not len(cytoplasm):
        raise ValueError("segment_cells needs at least one cytoplasm channel")
    if nuclei.max() == 0:
        return np.zeros(nuclei.shape, np.uint32)
    areas = np.bincount(nuclei.ravel())[1:]
    diameter = params.nucleus_diameter or 2 * np.sqrt(np.median(areas[areas > 0]) / np.pi)
    planes = [_normalized_plane(c, 4 * diameter, f"cytoplasm channel {k}") for k, c in enumerate(cytoplasm)]
    cyto = np.mean(planes, axis=0)
    threshold = auto_threshold(cyto, "otsu") * params.cell_threshold_scale
    if params.propagation == "local":
        foreground = cytoplasm_foreground(cyto, nuclei, threshold, diameter, params)
    elif params.propagation == "global":
        foreground = cyto > threshold
    else:
        raise ValueError(f"unknown propagation {params.propagation!r}; choose 'local' or 'global'")
    foreground = remove_small(foreground, params.min_cell_area) | (nuclei > 0)
    foreground = ndi.binary_fill_holes(foreground)
    relief = planes[0] + filters.sobel(cyto)
    cells = segmentation.watershed(relief, nuclei.astype(np.int32), mask=foreground,
                                   compactness=params.compactness)
    return cells.astype(np.uint32)


def cytoplasm_foreground(cyto: np.ndarray, nuclei: np.ndarray, global_threshold: float, diameter: float,
                         params: ClassicalParams = ClassicalParams()) -> np.ndarray:
    """Cytoplasm foreground with a threshold per cell (CellProfiler-style per-object thresholds).

    Each nucleus gets the pixels within ``cell_reach`` nucleus diameters of it (nearest nucleus
    first, `skimage.segmentation.expand_labels`); its threshold is the Otsu threshold of those
    pixels outside the nuclei, capped at the field's ``global_threshold`` (so a bright cell is
    never cut back) and floored at the background level + ``background_sigmas`` robust standard
    deviations (median and MAD of the pixels below the global threshold, away from nuclei), so
    that flat background around a dim cell stays background. Pixels beyond every cell's reach use
    the global threshold.

    Parameters
    ----------
    cyto
        (H, W) float32 normalized cytoplasm image (background removed).
    nuclei
        (H, W) integer nucleus labels.

    Returns
    -------
    (H, W) bool foreground.
    """
    global_fg = cyto > global_threshold
    reach = max(1, int(round(params.cell_reach * diameter)))
    regions = segmentation.expand_labels(np.asarray(nuclei, np.int32), reach)
    away = (regions == 0) & ~global_fg
    if away.sum() < 100:  # a field covered by cells: no background to measure
        away = ~global_fg & (nuclei == 0)
    values = cyto[away]
    if values.size < 100:
        return global_fg
    background = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - background)))
    floor = background + params.background_sigmas * max(spread, 1e-6)
    thresholds = np.full(int(regions.max()) + 1, global_threshold, np.float64)
    outside = nuclei == 0
    for label, box in enumerate(ndi.find_objects(regions), start=1):
        if box is None:
            continue
        own = (regions[box] == label) & outside[box]
        pixels = cyto[box][own]
        if pixels.size < 20 or pixels.min() == pixels.max():
            continue
        thresholds[label] = min(global_threshold, max(floor, _otsu(pixels)))
    thresholds[0] = global_threshold
    return global_fg | ((regions > 0) & (cyto > thresholds[regions]))
