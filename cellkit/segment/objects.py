"""Nucleus-cell pairing and border flags shared by all backends."""

from __future__ import annotations

import numpy as np

from ._kernels import apply_table, kept_raster_table, paired_labels, raster_table


def pair_nuclei_cells(nuclei: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make nuclei and cells one-to-one: nucleus k lies inside cell k.

    Each nucleus goes to the cell holding most of its pixels; a cell keeps the nucleus with the
    largest overlap among those assigned to it. Nuclei are clipped to their cell; cells without a
    nucleus and nuclei without a cell are dropped. Pairs are numbered 1..N in raster order of the
    cell's first pixel.

    Parameters
    ----------
    nuclei, cells
        (H, W) integer label images.

    Returns
    -------
    nuclei, cells : (H, W) uint32 each, the same label set {1..N}.
    """
    nuclei, cells = np.asarray(nuclei), np.asarray(cells)
    if nuclei.shape != cells.shape:
        raise ValueError(f"nuclei {nuclei.shape} and cells {cells.shape} differ in shape")
    n_nuc, n_cell = int(nuclei.max(initial=0)), int(cells.max(initial=0))
    both = (nuclei > 0) & (cells > 0)
    codes, counts = np.unique(nuclei[both].astype(np.int64) * (n_cell + 1) + cells[both], return_counts=True)
    nuc, cell = codes // (n_cell + 1), codes % (n_cell + 1)
    # best cell of each nucleus (largest overlap): sort by overlap, the last write wins
    order = np.argsort(counts, kind="stable")
    best_cell = np.zeros(n_nuc + 1, np.int64)
    best_count = np.zeros(n_nuc + 1, np.int64)
    best_cell[nuc[order]] = cell[order]
    best_count[nuc[order]] = counts[order]
    # each cell keeps its largest assigned nucleus
    assigned = np.flatnonzero(best_cell)
    order = assigned[np.argsort(best_count[assigned], kind="stable")]
    cell_nucleus = np.zeros(n_cell + 1, np.int64)
    cell_nucleus[best_cell[order]] = order
    kept_cells = np.flatnonzero(cell_nucleus)
    keep = np.zeros(n_cell + 1, bool)
    keep[kept_cells] = True
    flat_cells, flat_nuclei = np.ascontiguousarray(cells).ravel(), np.ascontiguousarray(nuclei).ravel()
    new_id = kept_raster_table(flat_cells, keep)  # kept cells numbered in raster order, the others 0
    nuc_map = np.zeros(n_nuc + 1, np.uint32)
    nuc_map[cell_nucleus[kept_cells]] = new_id[kept_cells]  # a nucleus takes its cell's new label
    new_nuclei, new_cells = paired_labels(flat_nuclei, flat_cells, nuc_map, new_id)  # nuclei clipped to their cell
    return new_nuclei.reshape(nuclei.shape), new_cells.reshape(cells.shape)


def border_labels(labels: np.ndarray) -> np.ndarray:
    """Sorted labels (int64) of the objects touching the image border."""
    labels = np.asarray(labels)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    ids = np.unique(edge)
    return ids[ids > 0].astype(np.int64)


def relabel_raster(labels: np.ndarray) -> np.ndarray:
    """Number objects 1..N in raster order of their first pixel, uint32 (labels >= 0)."""
    labels = np.asarray(labels)
    flat = np.ascontiguousarray(labels).ravel()
    return apply_table(flat, _raster_table(flat)).reshape(labels.shape)


def _raster_table(flat: np.ndarray) -> np.ndarray:
    """label -> its number in raster order of first pixels (`raster_table`) of a 1-D label array."""
    if flat.dtype.kind not in "iu":
        flat = flat.astype(np.int64)
    return raster_table(flat, int(flat.max(initial=0)))
