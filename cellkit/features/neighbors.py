"""Neighbors: touching objects and distances between object centres (CellProfiler
MeasureObjectNeighbors, "Adjacent" method)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ._objects import Objects


def adjacent_pairs(image: np.ndarray) -> np.ndarray:
    """(K, 2) unique label pairs (a < b) that touch in the 8-neighbourhood of a label image."""
    pairs = []
    for a, b in ((image[:, :-1], image[:, 1:]), (image[:-1, :], image[1:, :]),
                 (image[:-1, :-1], image[1:, 1:]), (image[:-1, 1:], image[1:, :-1])):
        touch = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.minimum(a[touch], b[touch]) * (int(image.max()) + 1) + np.maximum(a[touch], b[touch]))
    keys = np.unique(np.concatenate(pairs))
    return np.stack(np.divmod(keys, int(image.max(initial=0)) + 1), 1).astype(np.int64)


def neighbor_features(objects: Objects, *, distance: float | None = None) -> dict[str, np.ndarray]:
    """Neighbour counts of every object.

    Returns ``Neighbors_NumberOfNeighbors_Adjacent`` (objects touching, 8-connectivity),
    ``Neighbors_PercentTouching_Adjacent`` (% of edge pixels next to another object),
    ``Neighbors_FirstClosestDistance_Adjacent`` / ``SecondClosestDistance`` (centroid distances
    to the nearest other objects; NaN without one), and with ``distance``,
    ``Neighbors_NumberOfNeighbors_<distance>`` (other centroids within ``distance`` pixels;
    CellProfiler expands the masks instead).
    """
    image = objects.image
    pairs = adjacent_pairs(image)
    count = np.bincount(pairs.ravel() - 1, minlength=objects.n).astype(np.float64)  # image holds row + 1
    # Edge pixels with a 4-neighbour of another object (background does not count).
    padded = np.pad(image, 1)
    rows, cols = objects.rows + 1, objects.cols + 1
    own = image.ravel()[objects.flat]
    touching = np.zeros(rows.size, dtype=bool)
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        other = padded[rows + dr, cols + dc]
        touching |= (other != own) & (other > 0)
    edge_n = objects.sum(objects.inner_boundary.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = 100 * objects.sum(touching.astype(np.float64)) / edge_n
    cy, cx = objects.centroid
    present = objects.present
    first, second = np.full(objects.n, np.nan), np.full(objects.n, np.nan)
    centres = np.stack([cy[present], cx[present]], 1)
    out = {"Neighbors_NumberOfNeighbors_Adjacent": count, "Neighbors_PercentTouching_Adjacent": percent}
    if distance is not None:
        within = np.zeros(objects.n)
        if len(centres):
            within[present] = [len(v) - 1 for v in cKDTree(centres).query_ball_point(centres, distance)]
        out[f"Neighbors_NumberOfNeighbors_{distance:g}"] = within
    if len(centres) > 1:
        d, _ = cKDTree(centres).query(centres, k=min(3, len(centres)))
        first[present] = d[:, 1]
        if d.shape[1] > 2:
            second[present] = d[:, 2]
    out["Neighbors_FirstClosestDistance_Adjacent"] = first
    out["Neighbors_SecondClosestDistance_Adjacent"] = second
    return {k: np.where(present, v, np.nan) for k, v in out.items()}
