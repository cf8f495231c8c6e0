"""The extraction pass: read each field once, cut its cells, write cells.zarr (and cells.h5ad).

How writing stays safe and resumable
------------------------------------
1. **Plan** (`plan.py`, parallel over fields): from the labels alone, the kept cells of every
   field, in a fixed order (fields in index order, cells in label order). Every cell's store row
   is known before any image is read. The plan reads each field's label summary (the ``objects``
   attribute written with the labels, `cellkit.io.labels`), not its label images. Bad inputs
   (labels missing, shapes that disagree, unreadable images) are all reported here, before
   anything is written.
2. **Skeleton** (`store.py`): the store is created in a temporary folder with its empty ``images``/``masks``,
   the full ``obs`` table and a ``progress/done`` flag per write block, then moved into place. A
   store at ``out`` therefore always has its full skeleton.
3. **Cut and write** (one dask graph, `tasks.py`; one local worker runs the same tasks in order in the
   calling thread, without building a graph): a *field task* reads one field and decodes its
   labels once, checks them against the plan, cuts all its kept
   cells (and measures them when a ``measure`` function is given); a *block task* gathers the rows
   of one write block (``block_cells`` rows, whole chunks) from the field tasks that overlap it,
   writes them (images, masks, feature rows), then sets its ``done`` flag. Each block has exactly
   one writer and blocks are chunk-aligned, and flags are one chunk each, so no two tasks ever
   write the same chunk. A field straddling two blocks is read once and feeds both; the dask
   graph releases a field's cut once its blocks are written, so a few fields are in flight.
4. **Finish**: the feature rows are joined into ``features``, ``cells.h5ad`` is written
   atomically, and the store is marked complete last.

A killed run leaves an incomplete store (readers refuse it). Rerunning the same command checks
that inputs and parameters are unchanged (a fingerprint of both), skips blocks already flagged
done, and writes the rest; blocks are deterministic, so the final store equals an
uninterrupted run, whatever the number of workers. Every chunk, flag and metadata file is written
atomically (temporary file + rename: Zarr's local store, and `cellkit.io._chunk_files` for the rows
and flags of blocks), so a kill never leaves a torn chunk or flag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import zarr

from .._atomic import check_output
from .._lock import output_lock
from .._logging import get_logger
from .._parallel import Runner
from .._progress import progress_bar
from ..io import cells as cellstore
from ..io.images import INTENSITY_RULE
from ..io.plate_index import channels_of, read_index
from .plan import BORDER_POLICIES, ExtractInputError, plan_field, plan_obs
from .store import check_writable as _check_writable
from .store import create_skeleton as _create_skeleton
from .store import fingerprint as _fingerprint
from .store import join_features as _join_features
from .store import open_existing as _open_existing
from .store import remove_derived as _remove_derived
from .store import verify_blocks as _verify_blocks
from .store import write_adata as _write_adata
from .tasks import FieldCut, Measure  # noqa: F401 (re-exported)
from .tasks import block_pieces as _block_pieces
from .tasks import cut_field as _cut_field
from .tasks import write_block as _write_block

logger = get_logger(__name__)


@dataclass
class ExtractResult:
    """What `extract_cells` did."""

    store: Path
    adata: Path | None
    n_cells: int
    n_fields: int
    empty_fields: list[str]
    blocks_written: int
    blocks_total: int
    skipped: bool


def _measure_name(measure: Measure | None) -> str:
    if measure is None:
        return "none"
    return f"{getattr(measure, '__module__', '?')}.{getattr(measure, '__qualname__', repr(measure))}"


def _write_inline(todo: list[int], pieces: dict, cut, write, progress) -> None:
    """One local worker: the field and block tasks in order in this thread, as dask's synchronous scheduler
    would run them, without building a graph. A field is cut once, when its first block needs it, and
    dropped after its last block is written (memory stays flat). ``progress(cells written so far)``."""
    last_use = {f: j for j in todo for f, _, _ in pieces[j]}
    cuts, written = {}, 0
    for j in todo:
        parts = []
        for f, lo, hi in pieces[j]:
            if f not in cuts:
                cuts[f] = cut(f)
            parts.append((cuts[f], lo, hi))
        written += write(j, parts)
        for f, _, _ in pieces[j]:
            if last_use[f] == j:
                cuts.pop(f, None)
        progress(written)


# --------------------------------------------------------------------------- entry point

def extract_cells(index: pd.DataFrame | str | os.PathLike, labels: str | os.PathLike, out: str | os.PathLike, *,
                  size: int = 64, border: str = "inside", mask_neighbors: bool = False,
                  measure: Measure | None = None, adata: str | os.PathLike | None = None,
                  workers: int = 1, processes: bool = False, scheduler: str | None = None,
                  chunk_cells: int = cellstore.DEFAULT_CHUNK_CELLS, block_cells: int = cellstore.DEFAULT_BLOCK_CELLS,
                  sharded: bool = False, overwrite: bool = False, progress=None) -> ExtractResult:
    """Cut every segmented cell out of a plate into a single-cell store ``out`` (cells.zarr).

    Parameters
    ----------
    index
        Plate index (DataFrame or parquet path), one row per field; columns ``field_id``, metadata,
        ``path_<channel>``.
    labels
        Label store (labels.zarr) with ``nuclei`` and ``cells`` for every field of the index.
    out
        The cells.zarr to write. An incomplete store from the same inputs and parameters is resumed.
    size
        Crop side S in pixels; crops are centred on the nucleus centroid.
    border
        ``"inside"`` (default): keep every cell whose mask does not touch the field edge; its crop
        is padded with zeros where the window leaves the field (obs ``crop_padded`` = True).
        ``"drop"``: keep only cells whose whole window lies inside. ``"pad"``: keep every cell.
        The counts dropped are logged and recorded in the store attributes (``extract/dropped``).
    mask_neighbors
        Zero the pixels of other cells inside each crop.
    measure
        Optional ``measure(images (C,H,W) uint16 counts (any source dtype converted by
        `cellkit.io.images.to_uint16`, so intensities / 65535 are CellProfiler's 0-1 scale), nuclei (H,W) uint32, cells (H,W) uint32,
        channels) -> DataFrame`` (index = label, one float column per feature), called once per
        field on the field in memory. Its rows for kept cells are stored as ``features`` (N, F)
        float32, and written with obs to an AnnData at ``adata``.
    adata
        Path of the AnnData (h5ad) written when ``measure`` is given; default: ``out`` with
        suffix ``.h5ad`` (cells.zarr -> cells.h5ad).
    workers, processes, scheduler
        Local pool of ``workers`` threads (processes with ``processes=True``), or the address of
        a ``distributed`` scheduler (its workers must see the same file system).
    chunk_cells, block_cells
        Store chunking along N: compressed chunks of ``chunk_cells`` cells, written in blocks of
        ``block_cells`` cells (the unit of writing and resuming; a multiple of ``chunk_cells``).
    sharded
        Pack each block into one Zarr shard file (fewer files, slower random reads).
    overwrite
        Replace a store at ``out`` made from other inputs or parameters.
    progress
        Messages go to ``logging.getLogger("cellkit")``; ``progress``: None, True / ``"tqdm"`` (a notebook bar), ``"rich"``, or
        ``progress(cells_done, cells_total)`` (see `cellkit._progress`), counting cells written.

    Returns
    -------
    `ExtractResult` (store and AnnData paths, counts, fields without cells).

    Raises
    ------
    ExtractInputError
        Missing labels, images and labels of different shapes, unreadable images, an output
        path that cannot be written; raised before anything is written.
    StoreLockedError
        Another run is writing ``out`` (`cellkit._lock`).
    """
    _check_writable(Path(out).resolve())  # before taking the lock beside it
    with output_lock(Path(out)):
        return _extract(index, labels, out, size=size, border=border, mask_neighbors=mask_neighbors, measure=measure,
                        adata=adata, workers=workers, processes=processes, scheduler=scheduler,
                        chunk_cells=chunk_cells, block_cells=block_cells, sharded=sharded, overwrite=overwrite,
                        progress=progress)


def _extract(index, labels, out, *, size, border, mask_neighbors, measure, adata, workers, processes, scheduler,
             chunk_cells, block_cells, sharded, overwrite, progress) -> ExtractResult:
    log = logger.info
    if border not in BORDER_POLICIES:
        raise ValueError(f"border must be one of {BORDER_POLICIES}, got {border!r}")
    if size < 2:
        raise ValueError(f"size must be at least 2, got {size}")
    out = Path(out).resolve()  # on the client: workers may run in another directory
    _check_writable(out)
    adata_path = Path(adata).resolve() if adata is not None else (out.with_suffix(".h5ad") if measure is not None else None)
    if adata_path is not None:
        check_output(adata_path, "dir" if adata_path.suffix == ".zarr" else "file")
    index_source = str(index) if not isinstance(index, pd.DataFrame) else "DataFrame"
    index = read_index(index) if not isinstance(index, pd.DataFrame) else index.reset_index(drop=True)
    if index["field_id"].duplicated().any():
        raise ExtractInputError([f"field_id {f} appears more than once in the index"
                                 for f in index["field_id"][index["field_id"].duplicated()].unique()])
    labels = str(Path(labels).resolve())
    if not Path(labels).exists():
        raise ExtractInputError([f"no label store at {labels}"])
    channels = channels_of(index)
    run = Runner(workers=workers, processes=processes, address=scheduler)

    rows = index.to_dict("records")
    log(f"plan: reading labels of {len(rows)} fields ({run.describe()})")
    inline = run.address is None and run.workers <= 1  # one local worker: tasks in order here, no dask graph
    if inline:
        plans = [plan_field(row, labels, size, border) for row in rows]
    else:
        plans = run.compute([dask.delayed(plan_field, pure=False)(row, labels, size, border) for row in rows])
    problems = [p for p in plans if isinstance(p, str)]
    if problems:
        raise ExtractInputError(problems)
    obs = plan_obs(index, plans)
    counts = np.array([p.n_cells for p in plans], dtype=np.int64)
    empty = [p.field_id for p in plans if p.n_cells == 0]
    dropped = {k: int(sum(p.dropped[k] for p in plans)) for k in ("touching_edge", "crop_outside_field")}
    n_objects = int(sum(p.n_objects for p in plans))
    log(f"extract: {len(obs)} of {n_objects} objects kept (border={border!r}); dropped: "
        f"{dropped['touching_edge']} touching the image edge, {dropped['crop_outside_field']} whose "
        f"{size}-px crop window leaves the field; {int(obs['crop_padded'].sum())} crops padded with zeros")

    parameters = {"size": int(size), "border": border, "mask_neighbors": bool(mask_neighbors),
                  "chunk_cells": int(chunk_cells), "block_cells": int(block_cells), "sharded": bool(sharded),
                  "measure": _measure_name(measure)}
    inputs = {"index": index_source, "labels": labels, "n_fields": len(rows)}
    fingerprint = _fingerprint(obs, index, parameters)
    root = _open_existing(out, fingerprint, overwrite, adata_path)
    bounds = cellstore.block_bounds(len(obs), block_cells)
    result = ExtractResult(out, adata_path, len(obs), len(rows), empty, 0, len(bounds), skipped=False)
    if root is not None and root.attrs.get("complete") is True:
        if adata_path is not None and not adata_path.exists():
            _write_adata(root, adata_path)
        log(f"extract: {out} is already complete ({len(obs)} cells); nothing to do")
        result.skipped = True
        return result
    fresh = root is None  # a new skeleton: no block is flagged done yet
    if fresh:
        _remove_derived(adata_path)
        segmentation = dict(zarr.open_group(labels, mode="r").attrs.get("segmentation", {}))
        attrs = {"extract": {"parameters": parameters, "inputs": inputs, "fingerprint": fingerprint,
                             "objects": n_objects, "dropped": dropped, "pad_value": 0,
                             "intensity": INTENSITY_RULE, "segmentation": segmentation}}
        root = _create_skeleton(out, obs, channels, size, chunk_cells, block_cells, sharded, attrs)
    done = root["progress/done"][:] if bounds and not fresh else np.zeros(len(bounds), bool)
    todo = [j for j in range(len(bounds)) if not done[j]]
    if len(todo) < len(bounds):
        log(f"extract: resuming, {len(bounds) - len(todo)} of {len(bounds)} blocks already written")

    pieces = {j: _block_pieces(counts, *bounds[j]) for j in todo}
    log(f"extract: {len(obs)} cells from {len(rows)} fields ({len(empty)} without cells), "
        f"{len(todo)} blocks to write")
    offset = int(sum(b - a for j, (a, b) in enumerate(bounds) if done[j]))  # cells written by an earlier run
    with progress_bar(progress, "extracting cells", total=len(obs)) as update:
        update(offset, len(obs))
        if inline:
            cut = (lambda f: _cut_field(rows[f], labels, plans[f], size, border, mask_neighbors, channels, measure))
            _write_inline(todo, pieces, cut, lambda j, parts: _write_block(str(out), j, *bounds[j], parts),
                          lambda n: update(offset + n, len(obs)))
        else:
            needed = sorted({f for j in todo for f, _, _ in pieces[j]})
            field_tasks = {f: dask.delayed(_cut_field, pure=False)(
                rows[f], labels, plans[f], size, border, mask_neighbors, channels, measure,
                dask_key_name=f"cut-field-{f}-{fingerprint[:8]}") for f in needed}
            block_tasks = [dask.delayed(_write_block, pure=False)(
                str(out), j, *bounds[j], [(field_tasks[f], lo, hi) for f, lo, hi in pieces[j]],
                dask_key_name=f"write-block-{j}-{fingerprint[:8]}") for j in todo]
            run.compute(block_tasks, progress=lambda n, total: update(offset + n, len(obs)),
                        weights=[bounds[j][1] - bounds[j][0] for j in todo])
    result.blocks_written = len(todo)
    if not inline:  # other workers' flags must be visible here; inline blocks were written by this thread
        _verify_blocks(out, len(bounds))

    if measure is not None:
        _join_features(root, len(bounds))
    if adata_path is not None:
        _write_adata(root, adata_path)
    cellstore.mark_complete(root)
    log(f"extract: {out} complete")
    return result
