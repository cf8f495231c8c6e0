"""Per-object pixel lists: the shared, vectorised view every calculator reduces over."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import ndimage as ndi

from ._numba_intensity import geodesic_from_centre


def _sort_small_ints(values: np.ndarray) -> np.ndarray:
    """Stable argsort; radix sort when the values fit in 16 bits (O(n))."""
    if values.size and values.max() < 65536 and values.min() >= 0:
        values = values.astype(np.uint16)
    return np.argsort(values, kind="stable")


def present_labels(labels: np.ndarray) -> np.ndarray:
    """Sorted non-zero labels of a label image, int64 (bincount when labels are dense)."""
    labels = np.asarray(labels)
    top = int(labels.max(initial=0))
    if top <= 4 * labels.size:
        found = np.flatnonzero(np.bincount(labels.ravel().astype(np.int64), minlength=top + 1))
    else:
        found = np.unique(labels)
    return found[found > 0].astype(np.int64)


def label_lookup(labels: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Row of ``index`` for every element of ``labels`` (-1 where absent or 0)."""
    index = np.asarray(index, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    top = int(max(labels.max(initial=0), index.max(initial=0)))
    if top <= 4 * (labels.size + index.size):
        lut = np.full(top + 1, -1, dtype=np.int64)
        lut[index] = np.arange(index.size)
        return lut[labels]
    if index.size == 0:
        return np.full(labels.shape, -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(index, labels), 0, index.size - 1)
    return np.where(index[pos] == labels, pos, -1)


@dataclass
class Objects:
    """The pixels of a label image, grouped by object.

    Parameters
    ----------
    labels
        (H, W) integer label image, 0 = background.
    index
        Labels to report, int64, ascending (the output rows). Labels in ``index`` that are
        absent from ``labels`` get NaN features; labels not in ``index`` are ignored.

    Attributes
    ----------
    image
        (H, W) int64: row in ``index`` + 1 of every pixel's object, 0 elsewhere.
    rows, cols
        Pixel coordinates (P,), grouped by object (``index`` order), raster order inside.
    flat
        Flat pixel indices (P,).
    seg
        Row of ``index`` each pixel belongs to (P,), non-decreasing.
    counts, starts
        Pixels per object (N,) and start of each object's run in the pixel arrays (N,).
    """

    labels: np.ndarray
    index: np.ndarray
    rows: np.ndarray = field(init=False)
    cols: np.ndarray = field(init=False)

    def __post_init__(self):
        labels = np.asarray(self.labels)
        if labels.ndim != 2:
            raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
        self.index = np.asarray(self.index, dtype=np.int64)
        flat = np.flatnonzero(labels)
        seg = label_lookup(labels.ravel()[flat], self.index)
        keep = seg >= 0
        flat, seg = flat[keep], seg[keep]
        order = _sort_small_ints(seg)
        self.flat = flat[order]
        self.seg = seg[order]
        self.rows, self.cols = np.divmod(self.flat, labels.shape[1])
        self.counts = np.bincount(self.seg, minlength=self.index.size)
        self.starts = (np.cumsum(self.counts) - self.counts).astype(np.int64)
        self.shape = labels.shape
        # Label image of object rows + 1 (0: background and labels not in ``index``), for
        # neighbourhood operations; compact whatever the label values are.
        self.image = np.zeros(labels.shape, dtype=np.int64)
        self.image.ravel()[self.flat] = self.seg + 1

    @property
    def n(self) -> int:
        return self.index.size

    @property
    def present(self) -> np.ndarray:
        """(N,) bool: object has at least one pixel."""
        return self.counts > 0

    def sum(self, weights: np.ndarray) -> np.ndarray:
        """Per-object sum of per-pixel ``weights`` (P,) -> (N,) float64."""
        return np.bincount(self.seg, weights=weights, minlength=self.n)

    def mean(self, weights: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sum(weights) / self.counts

    def reduce(self, ufunc: np.ufunc, values: np.ndarray, empty=np.nan) -> np.ndarray:
        """Per-object ``ufunc.reduceat`` (max, min) of (P,) ``values``; ``empty`` where absent."""
        out = np.full(self.n, empty, dtype=np.float64)
        present = self.present
        if present.any():
            out[present] = ufunc.reduceat(values, self.starts[present])
        return out

    @cached_property
    def slices(self) -> list:
        """Bounding box (row slice, col slice) per object, None where absent."""
        found = ndi.find_objects(self.image, max_label=self.n)
        return list(found)

    @cached_property
    def boxes(self) -> np.ndarray:
        """(N, 4) int64 bounding boxes r0, r1, c0, c1 (stop exclusive); -1 for absent objects."""
        boxes = np.full((self.n, 4), -1, dtype=np.int64)
        for i, sl in enumerate(self.slices):
            if sl is not None:
                boxes[i] = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        return boxes

    @cached_property
    def centroid(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mean(self.rows.astype(np.float64)), self.mean(self.cols.astype(np.float64))

    @cached_property
    def inner_boundary(self) -> np.ndarray:
        """(P,) bool: pixel has a 4-neighbour with another label (the image edge does not count),
        as ``skimage.segmentation.find_boundaries(mode="inner")``."""
        img = self.image
        padded = np.pad(img, 1, mode="edge")
        centre = padded[1:-1, 1:-1]
        diff = ((padded[:-2, 1:-1] != centre) | (padded[2:, 1:-1] != centre)
                | (padded[1:-1, :-2] != centre) | (padded[1:-1, 2:] != centre))
        return diff.ravel()[self.flat]

    @cached_property
    def distance_to_edge(self) -> np.ndarray:
        """(P,) Euclidean distance of each pixel to the nearest pixel outside its object (the image
        border counts as outside), from one distance transform per object bounding box."""
        out = np.empty(self.flat.size)
        for i, sl in enumerate(self.slices):
            if sl is not None:
                mask = self.crop_mask(i, pad=1)
                out[self.starts[i]:self.starts[i] + self.counts[i]] = ndi.distance_transform_edt(mask)[mask]
        return out

    @cached_property
    def distance_to_edge_inside_image(self) -> np.ndarray:
        """(P,) as `distance_to_edge`, but the image border is not an edge (CellProfiler's
        ``distance_to_edge``, used by the radial distribution). Differs only for objects touching
        the border."""
        out = self.distance_to_edge.copy()
        h, w = self.shape
        for i, sl in enumerate(self.slices):
            if sl is None or not (sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w):
                continue
            grown = (slice(max(sl[0].start - 1, 0), sl[0].stop + 1), slice(max(sl[1].start - 1, 0), sl[1].stop + 1))
            mask = self.image[grown] == i + 1
            if mask.all():  # no pixel outside the object in reach: leave the bordered distance
                continue
            out[self.starts[i]:self.starts[i] + self.counts[i]] = ndi.distance_transform_edt(mask)[mask]
        return out

    @cached_property
    def deepest_pixel(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) row and col of each object's pixel farthest from its edge (first in raster order on
        ties; NaN where absent): the centre of CellProfiler's radial distribution."""
        dist = self.distance_to_edge_inside_image
        first = np.flatnonzero(dist == self.reduce(np.maximum, dist)[self.seg])
        seg, pos = np.unique(self.seg[first], return_index=True)
        ci, cj = np.full(self.n, np.nan), np.full(self.n, np.nan)
        ci[seg], cj[seg] = self.rows[first[pos]], self.cols[first[pos]]
        return ci, cj

    @cached_property
    def distance_from_centre(self) -> np.ndarray:
        """(P,) path length inside the object from its `deepest_pixel` (8-neighbour steps of 1 and
        sqrt 2), as CellProfiler propagates from the centre; inf for pixels it cannot reach."""
        out = np.full(self.flat.size, np.inf)
        ci, cj = self.deepest_pixel
        geodesic_from_centre(self.image, self.boxes, np.nan_to_num(ci), np.nan_to_num(cj), self.counts, out)
        return out

    def subset(self, keep: np.ndarray) -> "Objects":
        """The same objects restricted to the pixels where ``keep`` (P,) is True (e.g. finite values).

        Geometry (bounding boxes, edges, centroids) stays that of the full objects.
        """
        _ = (self.inner_boundary, self.slices, self.centroid, self.distance_to_edge, self.distance_to_edge_inside_image,
             self.distance_from_centre)
        sub = copy.copy(self)
        sub.__dict__["inner_boundary"] = self.inner_boundary[keep]
        sub.__dict__["distance_to_edge"] = self.distance_to_edge[keep]
        sub.__dict__["distance_from_centre"] = self.distance_from_centre[keep]
        sub.__dict__["distance_to_edge_inside_image"] = self.distance_to_edge_inside_image[keep]
        sub.flat, sub.seg, sub.rows, sub.cols = self.flat[keep], self.seg[keep], self.rows[keep], self.cols[keep]
        sub.counts = np.bincount(sub.seg, minlength=self.n)
        sub.starts = (np.cumsum(sub.counts) - sub.counts).astype(np.int64)
        return sub

    def sorted_within(self, values: np.ndarray) -> np.ndarray:
        """Order (P,) that sorts ``values`` inside each object (objects stay grouped)."""
        return np.lexsort((values, self.seg))

    def median(self, values: np.ndarray) -> np.ndarray:
        """Per-object median (numpy convention: mean of the two middle values)."""
        v = values[self.sorted_within(values)]
        out = np.full(self.n, np.nan)
        ok = self.present
        lo = self.starts[ok] + (self.counts[ok] - 1) // 2
        hi = self.starts[ok] + self.counts[ok] // 2
        out[ok] = (v[lo] + v[hi]) / 2
        return out

    def crop_mask(self, i: int, pad: int = 0) -> np.ndarray:
        """Binary mask of object ``i`` on its bounding box, zero-padded by ``pad``."""
        sl = self.slices[i]
        mask = self.image[sl] == i + 1
        return np.pad(mask, pad) if pad else mask


def cellprofiler_scale(image: np.ndarray) -> np.ndarray:
    """Intensities on CellProfiler's 0-1 scale as float64 (NaN kept), by dtype: uint8 / 255; float
    images whose finite values all lie in [0, 1] as they are; anything else (uint16 counts, 12-bit
    data in uint16, float counts) / 65535. Matches `cellkit.io.images.to_uint16` + counts / 65535."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    out = image.astype(np.float64)
    if np.issubdtype(image.dtype, np.floating):
        finite = out[np.isfinite(out)]
        if finite.size and finite.min() >= 0 and finite.max() <= 1:
            return out
    return out / 65535.0
