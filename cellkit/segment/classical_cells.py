"""Classical cells (IdentifySecondaryObjects, "Propagation"-like): a seeded watershed from the nuclei
over the cytoplasm channels, limited to the thresholded cytoplasm foreground (see `cellkit.segment.classical`)."""

from __future__ import annotations

import numpy as np
from skimage import segmentation

from ._fast import expand_labels, fill_holes, gaussian, one_cv2_thread, percentile, sobel
from ._kernels import label_otsu, lookup
from .params import ClassicalParams
from .thresholds import _as_float, auto_threshold, remove_background, remove_small


def _normalized_plane(channel: np.ndarray, radius: float, name: str) -> np.ndarray:
    """Smoothed, background-removed image scaled by its 99th percentile, float32 (H, W)."""
    plane = remove_background(gaussian(_as_float(channel, name), 1.5), radius)
    scale = percentile(plane, 99)
    return plane / scale if scale > 0 else plane


@one_cv2_thread
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
    cyto = planes[0].copy()
    for plane in planes[1:]:
        cyto += plane
    cyto /= len(planes)  # = np.mean(planes, axis=0) (float32, summed in order)
    threshold = auto_threshold(cyto, "otsu") * params.cell_threshold_scale
    if params.propagation == "local":
        foreground = cytoplasm_foreground(cyto, nuclei, threshold, diameter, params)
    elif params.propagation == "global":
        foreground = cyto > threshold
    else:
        raise ValueError(f"unknown propagation {params.propagation!r}; choose 'local' or 'global'")
    foreground = remove_small(foreground, params.min_cell_area) | (nuclei > 0)
    foreground = fill_holes(foreground)
    relief = planes[0] + sobel(cyto)
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
    regions = expand_labels(nuclei, reach)
    away = (regions == 0) & ~global_fg
    if away.sum() < 100:  # a field covered by cells: no background to measure
        away = ~global_fg & (nuclei == 0)
    values = cyto[away]
    if values.size < 100:
        return global_fg
    background = percentile(values, 50)
    spread = 1.4826 * percentile(np.abs(values - background), 50)
    floor = background + params.background_sigmas * max(spread, 1e-6)
    # each region's Otsu threshold over its pixels outside the nuclei (20 px at least, not constant)
    own = np.where(nuclei == 0, regions, 0).ravel()
    otsu = label_otsu(np.ascontiguousarray(cyto).ravel(), own, int(regions.max()), 20)
    thresholds = np.where(np.isnan(otsu), global_threshold, np.minimum(global_threshold, np.maximum(floor, otsu)))
    thresholds[0] = global_threshold
    return global_fg | ((regions > 0) & (cyto > lookup(regions, thresholds)))  # thresholds[regions]
