"""The two task kinds of an extraction graph (see `cellkit.extract.run`): cut a field, write a block."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import zarr
from zarr.core.sync import sync

from ..io import cells as cellstore
from ..io._chunk_files import chunk_writer
from ..io.images import read_field, to_uint16
from ..io.labels import edge_labels, field_group, label_centroids
from .crops import cut_crops
from .plan import ExtractInputError, FieldPlan, plan_from_arrays, same_plan

Measure = Callable[[np.ndarray, np.ndarray, np.ndarray, list], pd.DataFrame]


@dataclass
class FieldCut:
    """The output of a field task: crops (n, C, S, S) uint16 (`cellkit.io.images.to_uint16`), masks (n, 2, S, S) bool and,
    with a measure function, features (n, F) float32 with their column names."""

    field_id: str
    crops: np.ndarray
    masks: np.ndarray
    features: np.ndarray | None = None
    columns: list[str] | None = None


def read_planned_labels(labels_path: str, plan: FieldPlan, size: int, border: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode a field's labels (nuclei, cells: (H, W) uint32) and check that they still give ``plan``.

    This is the only decode of the label images in an extraction (the plan read their summary):
    the cells and centroids recomputed here must equal the plan's, else the labels changed after
    planning (or their summary is stale) and `ExtractInputError` says so.
    """
    group = field_group(labels_path, plan.field_id)
    if group is None:
        raise ExtractInputError([f"{plan.field_id}: labels are missing or incomplete in {labels_path}"])
    nuclei, cells = group["nuclei"][:], group["cells"][:]
    if nuclei.shape != cells.shape:
        raise ExtractInputError([f"{plan.field_id}: nuclei {nuclei.shape} and cells {cells.shape} labels differ in shape"])
    labels, centroids = label_centroids(nuclei)  # what `summarize_labels` stores, as arrays
    fresh = plan_from_arrays(plan.field_id, nuclei.shape, labels, centroids, edge_labels(cells), size, border)
    if not same_plan(fresh, plan):
        raise ExtractInputError([f"{plan.field_id}: its labels in {labels_path} changed after planning (or their "
                                 "'objects' summary does not match them); rewrite them with "
                                 "cellkit.io.labels.write_field_labels or rerun segmentation, then rerun"])
    return nuclei, cells


def cut_field(row: dict, labels_path: str, plan: FieldPlan, size: int, border: str, mask_neighbors: bool,
              channels: list[str], measure: Measure | None) -> FieldCut:
    """Field task: read the field and its labels once, cut its planned cells, measure them."""
    images = read_field(row, channels)
    nuclei, cells = read_planned_labels(labels_path, plan, size, border)
    if images.shape[1:] != nuclei.shape:
        raise ExtractInputError([f"{plan.field_id}: image {images.shape[1:]} and labels {nuclei.shape} differ"])
    try:
        images, _ = to_uint16(images, f"{plan.field_id} ({images.dtype} images)")
    except ValueError as err:
        raise ExtractInputError([str(err)]) from None
    crops, masks = cut_crops(images, nuclei, cells, plan.labels, plan.origins, size, mask_neighbors=mask_neighbors)
    part = FieldCut(plan.field_id, crops, masks)
    if measure is not None:
        table = measure(images, nuclei, cells, list(channels))
        missing = np.setdiff1d(plan.labels, np.asarray(table.index, dtype=np.int64))
        if len(missing):
            raise ValueError(f"{plan.field_id}: the measure function returned no row for labels "
                             f"{missing[:10].tolist()}")
        table = table.loc[plan.labels]
        part.features = table.to_numpy(dtype=np.float32)
        part.columns = [str(c) for c in table.columns]
    return part


def write_block(out: str, block: int, start: int, stop: int, pieces: list) -> int:
    """Block task: write rows [start, stop) from ``pieces`` [(FieldCut, lo, hi), ...], then flag it done."""
    crops = np.concatenate([p.crops[lo:hi] for p, lo, hi in pieces])
    masks = np.concatenate([p.masks[lo:hi] for p, lo, hi in pieces])
    if len(crops) != stop - start:
        raise RuntimeError(f"block {block}: {len(crops)} rows for [{start}, {stop})")
    features = pieces[0][0].features is not None
    if features:
        columns = pieces[0][0].columns
        if any(p.columns != columns for p, _, _ in pieces):
            raise ValueError(f"block {block}: the measure function returned different columns for different fields")
        root = zarr.open_group(out, mode="r+")
        part = root["progress"].create_array(f"features_{block:06d}", overwrite=True,
                                             data=np.concatenate([p.features[lo:hi] for p, lo, hi in pieces]),
                                             chunk_key_encoding=cellstore.CHUNK_KEYS)
        part.attrs["columns"] = columns

    async def open_arrays():  # one hand-off to Zarr's event loop
        store = zarr.storage.LocalStore(out)
        return await asyncio.gather(*(zarr.api.asynchronous.open_array(store=store, path=name, mode="r+", zarr_format=3)
                                      for name in ("images", "masks", "progress/done")))

    images, mask_array, done = (zarr.Array(a) for a in sync(open_arrays()))
    for array, rows in ((images, crops), (mask_array, masks)):
        write_rows(array, start, rows)
    write_rows(done, block, np.ones(1, bool))  # after the rows: a flagged block is always whole
    return stop - start


def write_rows(array: zarr.Array, start: int, rows: np.ndarray) -> None:
    """Write ``rows`` at ``start`` (a chunk boundary; whole chunks, or up to the array's end), every chunk stored.

    Plain local layouts go straight to their chunk files (`cellkit.io._chunk_files`: the same bytes
    as Zarr, without its per-chunk event-loop machinery, which cost more CPU than encoding and
    writing); others (sharded stores) go through Zarr, one ``setitem`` per chunk or shard.
    """
    direct = chunk_writer(array)
    if direct is not None:
        direct(start, rows)
        return

    array = array.with_config(cellstore.WRITE_CONFIG)
    step = (array.shards or array.chunks)[0]
    for i in range(0, len(rows), step):  # Zarr copies a value spanning several chunks (shards) into one buffer each
        array[start + i:start + min(i + step, len(rows))] = rows[i:i + step]


def block_pieces(counts: np.ndarray, start: int, stop: int) -> list[tuple[int, int, int]]:
    """The fields feeding rows [start, stop): [(field position, lo, hi), ...] with lo/hi field-local."""
    offsets = np.concatenate([[0], np.cumsum(counts)])
    first = int(np.searchsorted(offsets, start, side="right")) - 1
    pieces = []
    for f in range(first, len(counts)):
        if offsets[f] >= stop:
            break
        lo, hi = max(start, offsets[f]) - offsets[f], min(stop, offsets[f + 1]) - offsets[f]
        if hi > lo:
            pieces.append((f, int(lo), int(hi)))
    return pieces
