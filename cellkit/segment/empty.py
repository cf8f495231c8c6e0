"""Is there anything to segment? Foreground evidence against a field's own noise level.

A field of background and camera noise only must give 0 objects, not hundreds of noise blobs
(thresholds adapt to whatever contrast a field has). The evidence map is measured on the image
itself:

- ``signal``: the image after a 3 x 3 median (drops hot pixels) and a 5 x 5 mean (about the
  smallest nucleus), minus a smooth background (medians of 16 x 16 blocks, median-filtered over
  5 x 5 blocks so that nuclei do not raise it);
- ``noise``: the noise of that filtered image, measured on it from differences of pixels `LAG`
  apart (their filter windows do not overlap) with a clipped, robust standard deviation (the
  larger of the two axes), so objects, gradients and the noise's own distribution (Poisson at
  low counts, binary) are all accounted for; at least 0.1 grey level for integer images;
- evidence = signal / noise, in standard deviations of filtered noise.

A field has foreground when a connected region of at least ``min_area`` pixels has evidence
over ``min_snr`` (default 6: white noise exceeds it at ~1e-9 of its pixels, so a 1-megapixel
noise field is called empty with probability ~0.999; chosen from that tail, not tuned on data).
Objects whose evidence never reaches ``min_snr`` are dropped from a segmentation (`drop_faint`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ._fast import box5, label4, label_maximum, median3, one_cv2_thread, zoom_grid
from ._kernels import robust_std

DEFAULT_MIN_SNR = 6.0
LAG = 8  # px between the pixels whose differences measure the noise (> 3 + 5 - 1: windows apart)
BLOCK = 16
EDGE = 3
STRIDE = 3
WIDE_STRIDE = 6  # fields of >= WIDE_PIXELS: pairs whose 5 x 5 windows do not overlap, >= 10,000 per axis
WIDE_PIXELS = 512 * 512


def _block_medians(image: np.ndarray) -> np.ndarray:
    """Medians of the 16 x 16 blocks of ``image`` (reflect-padded to whole blocks)."""
    h, w = image.shape
    ph, pw = -h % BLOCK, -w % BLOCK
    padded = np.pad(image, ((0, ph), (0, pw)), mode="reflect") if (ph or pw) else image
    blocks = padded.reshape(padded.shape[0] // BLOCK, BLOCK, padded.shape[1] // BLOCK, BLOCK)
    blocks = np.ascontiguousarray(blocks.transpose(0, 2, 1, 3)).reshape(blocks.shape[0], blocks.shape[2], -1)
    half = BLOCK * BLOCK // 2  # np.median of an even count: the mean of the two middle values, computed
    upper = np.partition(blocks, half, axis=2)  # from one partition (the lower middle is the largest below)
    return (upper[..., :half].max(axis=2) + upper[..., half]) / np.asarray(2, blocks.dtype)


def _background(image: np.ndarray, percentile: float = 50, grid: np.ndarray | None = None) -> np.ndarray:
    """Smooth background (H, W): 16 x 16 block medians (``grid``, `_block_medians`, computed when
    not given), their ``percentile`` over 5 x 5 blocks (50: unbiased on noise and gradients; 10:
    the gaps between nuclei even where nuclei fill most blocks), upsampled."""
    h, w = image.shape
    grid = _block_medians(image) if grid is None else grid
    grid = ndi.percentile_filter(grid, percentile, size=5, mode="nearest")
    up = zoom_grid(grid, BLOCK)  # = ndi.zoom(grid, BLOCK, order=1, mode="nearest", grid_mode=True)
    return up[:h, :w]


def _robust_std(values: np.ndarray) -> float:
    """Std of the bulk of ``values``: interquartile start, then three rounds of 4-sigma clipping
    (each: median and std of the values kept; `_kernels.robust_std`)."""
    values = np.ascontiguousarray(values, np.float64).ravel()
    return float(robust_std(values)) if values.size else float("nan")


def _lag_pairs(image: np.ndarray) -> list[tuple[tuple[slice, slice], tuple[slice, slice]]]:
    """(ahead, behind) slices of the pixel pairs `LAG` apart on every `STRIDE`-th row and column
    (`WIDE_STRIDE`-th on large images), per axis."""
    stride = WIDE_STRIDE if image.size >= WIDE_PIXELS else STRIDE
    pairs = []
    for axis in (0, 1):
        if image.shape[axis] <= LAG:
            continue
        ahead = (slice(LAG, None, stride), slice(None, None, stride))
        behind = (slice(None, -LAG, stride), slice(None, None, stride))
        pairs.append((ahead[::-1], behind[::-1]) if axis == 1 else (ahead, behind))
    return pairs


def _pair_sigma(diffs: list[np.ndarray], integer: bool) -> float:
    sigma = max((_robust_std(d) / np.sqrt(2) for d in diffs), default=0.0)
    return max(sigma, 0.1 if integer else 0.0, 1e-12)


def filtered_noise(signal: np.ndarray, background: np.ndarray, integer: bool, first: float | None = None) -> float:
    """Std of the noise of a filtered image, from differences of pixels `LAG` apart (their filter
    windows do not overlap, so noise adds and smooth structure cancels), the larger of the two
    axes; twice refined on pairs of background pixels (both within 3 sigma of ``background``) so
    that the edges of dense objects do not inflate it. Pairs on every `STRIDE`-th row and column
    (plenty of samples, a ninth of the work); every `WIDE_STRIDE`-th on images of `WIDE_PIXELS` or
    more, where that still leaves over 10,000 nearly independent pairs per axis. At least 0.1 grey level for integer images.
    ``first``: the first round's estimate (all pairs, so the same for any background) when known."""
    pairs = _lag_pairs(signal)
    diffs = [signal[a] - signal[b] for a, b in pairs]
    sigma = _pair_sigma(diffs, integer) if first is None else first
    residual = signal - background
    for _ in range(2):
        kept = []
        for diff, (a, b) in zip(diffs, pairs):
            keep = (np.abs(residual[a]) <= 3 * sigma) & (np.abs(residual[b]) <= 3 * sigma)
            kept.append(diff[keep] if keep.sum() >= 100 else diff)
        sigma = _pair_sigma(kept, integer)
    return sigma


@one_cv2_thread
def evidence_maps(image: np.ndarray, percentiles=(50, 10)) -> list[np.ndarray]:
    """Evidence maps (H, W) float32, one per background ``percentile`` (`_background`): local
    signal above that background in units of the field's own noise (`filtered_noise`, measured on
    the pixels near that background; the filtered image is computed once). Within `EDGE` px of the border, where the filters see mirrored, correlated
    pixels, each map holds its nearest inner value. 50 decides whether a field has foreground at
    all (`has_foreground`); 10 judges each object against the gaps around it (`drop_faint`)."""
    integer = np.issubdtype(np.asarray(image).dtype, np.integer)
    image = np.asarray(image, np.float32)
    signal = box5(median3(image))  # = ndi.uniform_filter(ndi.median_filter(image, 3, mode="reflect"), 5, mode="reflect")
    maps, grid = [], _block_medians(signal)
    first = _pair_sigma([signal[a] - signal[b] for a, b in _lag_pairs(signal)], integer)  # background-free
    for percentile in percentiles:
        background = _background(signal, percentile, grid)
        evidence = ((signal - background) / filtered_noise(signal, background, integer, first)).astype(np.float32)
        if min(evidence.shape) > 2 * EDGE:  # = np.pad(evidence[EDGE:-EDGE, EDGE:-EDGE], EDGE, mode="edge")
            evidence[:EDGE], evidence[-EDGE:] = evidence[EDGE], evidence[-EDGE - 1]
            evidence[:, :EDGE], evidence[:, -EDGE:] = evidence[:, EDGE:EDGE + 1], evidence[:, -EDGE - 1:-EDGE]
        maps.append(evidence)
    return maps


def foreground_evidence(image: np.ndarray, percentile: float = 50) -> np.ndarray:
    """The evidence map of one background ``percentile`` (see `evidence_maps`)."""
    return evidence_maps(image, (percentile,))[0]


def has_foreground(evidence: np.ndarray, min_area: int = 15, min_snr: float = DEFAULT_MIN_SNR) -> bool:
    """True when a connected region of >= ``min_area`` px has evidence above ``min_snr``."""
    mask = evidence > min_snr
    if mask.sum() < min_area:
        return False
    if mask.ndim != 2:
        labels, n = ndi.label(mask)
        return bool(n) and int(np.bincount(labels.ravel())[1:].max()) >= min_area
    labels, _ = label4(mask)  # = ndi.label's
    return int(np.bincount(labels.ravel())[1:].max(initial=0)) >= min_area


def drop_faint(labels: np.ndarray, evidence: np.ndarray, min_snr: float = DEFAULT_MIN_SNR) -> np.ndarray:
    """Remove objects whose peak evidence is not above ``min_snr``; keep the others' numbers' order
    (renumbered 1..N in raster order of their first pixel when any is removed)."""
    n = int(labels.max(initial=0))
    if n == 0:
        return labels
    peak = label_maximum(evidence, labels, n)  # = ndi.maximum(evidence, labels, 1..n)
    faint = np.flatnonzero(np.asarray(peak) <= min_snr) + 1
    if not len(faint):
        return labels
    from .objects import relabel_raster

    return relabel_raster(np.where(np.isin(labels, faint), 0, labels))


def field_is_empty(image: np.ndarray, min_area: int = 15, min_snr: float = DEFAULT_MIN_SNR) -> tuple[bool, float]:
    """``(empty, peak evidence)`` of a single-channel (H, W) image (median background)."""
    evidence = foreground_evidence(image)
    return not has_foreground(evidence, min_area, min_snr), float(evidence.max(initial=0))
