"""The single-cell Zarr store (``cells.zarr``, Zarr v3).

Layout (format_version 3)::

    cells.zarr/
      images    (N, C, S, S) uint16, chunks of ``chunk_cells`` cells along N (default 32),
                lz4 + bitshuffle (Blosc); chunk files ``images/c.<i>.0.0.0`` (see `CHUNK_KEYS`)
      masks     (N, 2, S, S) bool, same chunking: nucleus, cell (of the centre cell)
      obs/      one 1-D array per column (N,), in row order; attrs["columns"] gives the order
      features  (N, F) float32, optional (per-cell morphology); attrs["columns"] = feature names
      progress/ writer bookkeeping (``done``: one flag per write block), see `cellkit.extract`
      attrs:    format, format_version, channels, crop_size, n_cells, chunk_cells, block_cells,
                cellkit_version, parameters and inputs of the writer,
                complete (True only once every cell is written; written last)

Writers write whole *blocks* of ``block_cells`` rows (a multiple of ``chunk_cells``), so a
writer that owns a block never shares a chunk. Small chunks keep random access cheap (a random
cell decodes 32 cells; 32 rather than 16 since format 3: less to write, random reads as fast, see
`DEFAULT_CHUNK_CELLS`). ``sharded=True`` packs each block into one Zarr shard file
instead (far fewer files), at ~1.5-4x the random-read cost with zarr 3.1 (benchmarks/extract.py).
Readers refuse a store whose ``complete`` attribute is not True.

Format versions: 3 names chunk files ``c.<i>.0.0.0`` inside each array folder (Zarr's chunk key
encoding with the "." separator) and writes every chunk of a block, even an all-zero one; 2 used
nested folders ``c/<i>/0/0/0`` and skipped all-zero chunks. The values are the same, and Zarr
reads the layout from each array's metadata, so version 2 stores read as before.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from zarr.core.sync import sync

from .. import __version__

FORMAT = "cellkit.cells"
FORMAT_VERSION = 3
# Chunk files ``c.<i>.0.0.0`` beside the array's zarr.json: nested ``c/<i>/0/0/0`` (version 2) made up to
# three new folders per chunk, the largest part of writing a store (benchmarks/extract.py).
CHUNK_KEYS = {"name": "default", "separator": "."}
# Writers store every chunk, all-zero ones too: Zarr's test of each chunk against the fill value runs on its
# single event-loop thread and took about a fifth of the time of writing crops.
WRITE_CONFIG = {"write_empty_chunks": True}
# 32 cells per chunk: each chunk costs Zarr a fixed overhead to write (two thread hand-offs, a file); against 16,
# extracting 20 or 60 fields took 3-17% less CPU and 12-21% less time (interleaved runs), random reads from a
# 12k-cell store were as fast (256-cell batches 0.79 vs 0.84 ms/cell, single cells 1.73 vs 1.84 ms), and
# training reads runs of >= 64 cells (`cellkit.models.data.CellChunks`).
DEFAULT_CHUNK_CELLS = 32
DEFAULT_BLOCK_CELLS = 256


class IncompleteStoreError(RuntimeError):
    """A store was opened for reading before its writer marked it complete."""


def _compressor():
    # lz4 + bitshuffle: ~5x faster to write and read than zstd-3 here, for ~7% more bytes
    # (measured on synthetic crops, see benchmarks/extract.py)
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")


def _chunking(shape: tuple, chunk_cells: int, block_cells: int, sharded: bool) -> dict:
    """Chunk (and shard) keywords for an array chunked along its first axis."""
    block, chunk = int(block_cells), int(chunk_cells)
    if chunk < 1 or block % chunk:
        raise ValueError(f"block_cells ({block_cells}) must be a multiple of chunk_cells ({chunk_cells})")
    keywords = {"chunks": (chunk,) + tuple(shape[1:])}
    if sharded:
        keywords["shards"] = (block,) + tuple(shape[1:])
    return keywords


def create_cells_store(path: str | os.PathLike | zarr.abc.store.Store, n_cells: int, channels: list[str],
                       crop_size: int, *, chunk_cells: int = DEFAULT_CHUNK_CELLS,
                       block_cells: int = DEFAULT_BLOCK_CELLS, sharded: bool = False, attrs: dict | None = None,
                       overwrite: bool = False) -> zarr.Group:
    """Create an empty cells.zarr (not yet complete) at ``path`` (a folder, or any Zarr store); return its root group.

    ``images`` (N, C, S, S) uint16 and ``masks`` (N, 2, S, S) bool are chunked by ``chunk_cells``
    cells and written in blocks of ``block_cells`` cells (one shard file each when ``sharded``).
    """
    store = path if isinstance(path, zarr.abc.store.Store) else str(path)
    root = zarr.open_group(store, mode="w" if overwrite else "w-", zarr_format=3)
    shape = (int(n_cells), len(channels), int(crop_size), int(crop_size))
    mask_shape = (shape[0], 2) + shape[2:]
    root.create_array("images", shape=shape, dtype="uint16", compressors=_compressor(), fill_value=0,
                      chunk_key_encoding=CHUNK_KEYS,
                      **_chunking(shape, chunk_cells, block_cells, sharded))
    root.create_array("masks", shape=mask_shape, dtype="bool", compressors=_compressor(), fill_value=False,
                      chunk_key_encoding=CHUNK_KEYS,
                      **_chunking(mask_shape, chunk_cells, block_cells, sharded))
    root.update_attributes({"format": FORMAT, "format_version": FORMAT_VERSION, "channels": list(channels),
                            "crop_size": int(crop_size), "n_cells": int(n_cells), "chunk_cells": int(chunk_cells),
                            "block_cells": int(block_cells), "sharded": bool(sharded), "cellkit_version": __version__,
                            "complete": False, **(attrs or {})})  # one write of zarr.json, not one per key
    return root


def block_bounds(n_cells: int, block_cells: int) -> list[tuple[int, int]]:
    """Row ranges ``[(start, stop), ...]`` of the write blocks of a store of ``n_cells`` rows."""
    return [(s, min(s + block_cells, n_cells)) for s in range(0, n_cells, block_cells)]


def write_obs(root: zarr.Group, obs: pd.DataFrame) -> None:
    """Write the obs table (one row per cell, store order) as one array per column under ``obs/``.

    String columns are stored as variable-length UTF-8; missing strings as ``""`` with a
    ``<column>__missing`` bool array beside them only when some are missing. The columns are
    written concurrently (one batch of Zarr writes, the same files as one by one).
    """
    group = root.require_group("obs")
    for name in list(group.array_keys()):
        del group[name]
    columns = ["cell_id"] + [c for c in obs.columns if c != "cell_id"] if "cell_id" in obs.columns else list(obs.columns)
    arrays = []  # (name, data, string)
    for col in columns:
        values = obs[col]
        if isinstance(values.dtype, pd.CategoricalDtype):  # e.g. obs read back from an h5ad
            values = values.astype(values.cat.categories.dtype)
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            arrays.append((col, values.to_numpy(), False))
            continue
        missing = values.isna().to_numpy()
        if missing.any():
            arrays.append((f"{col}__missing", missing, False))
        arrays.append((col, np.asarray(values.fillna("").astype(str).to_numpy(), dtype=object), True))

    async def write_all():
        import asyncio

        target = await zarr.api.asynchronous.open_group(store=group.store, path=group.path, mode="r+")

        async def one(name, data, string):
            if not string:
                await target.create_array(name, data=data, chunk_key_encoding=CHUNK_KEYS)
                return
            array = await target.create_array(name, shape=data.shape, dtype=str, chunks=(max(len(data), 1),),
                                              chunk_key_encoding=CHUNK_KEYS)
            if len(data):
                await array.setitem(slice(None), data)

        await asyncio.gather(*(one(*a) for a in arrays))

    sync(write_all())
    group.attrs["columns"] = columns


def read_obs(root: zarr.Group) -> pd.DataFrame:
    """Read the obs table written by `write_obs`; index = ``cell_id`` when present."""
    group = root["obs"]
    columns = group.attrs["columns"]
    data = {}
    for col in columns:
        values = group[col][:]
        if f"{col}__missing" in group:
            values = pd.Series(values, dtype=object).where(~group[f"{col}__missing"][:], None)
        data[col] = values
    obs = pd.DataFrame(data, columns=columns)
    if "cell_id" in obs:
        obs.index = pd.Index(obs["cell_id"].astype(str), name=None)
    return obs


def write_features(root: zarr.Group, features: np.ndarray, columns: list[str], *, name: str = "features",
                   chunk_cells: int | None = None) -> zarr.Array:
    """Write an (N, F) float32 feature table with its column names (``attrs["columns"]``)."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != len(columns):
        raise ValueError(f"features {features.shape} do not match {len(columns)} column names")
    rows = chunk_cells or root.attrs.get("block_cells", DEFAULT_BLOCK_CELLS)  # read whole, rarely sliced
    array = root.create_array(name, shape=features.shape, dtype="float32", compressors=_compressor(),
                              chunks=(max(1, min(int(rows), features.shape[0] or 1)), max(1, features.shape[1])),
                              fill_value=np.nan, chunk_key_encoding=CHUNK_KEYS, overwrite=True)
    if features.size:
        array[:] = features
    array.attrs["columns"] = list(columns)
    return array


def read_features(root: zarr.Group) -> pd.DataFrame | None:
    """The store's feature table (index = cell_id), or None when it has none."""
    if "features" not in root:
        return None
    array = root["features"]
    obs_ids = read_obs(root).index
    return pd.DataFrame(array[:], index=obs_ids, columns=list(array.attrs["columns"]))


def read_rows(array: zarr.Array, rows, *, threads: int = 8) -> np.ndarray:
    """Rows ``rows`` (any order, repeats allowed) of an array chunked along its first axis.

    One read per touched chunk, run concurrently: several times faster than Zarr's own integer
    array selection for random batches (see benchmarks/extract.py).
    """
    from concurrent.futures import ThreadPoolExecutor

    rows = np.asarray(rows, dtype=np.int64).ravel()
    out = np.empty((len(rows),) + tuple(array.shape[1:]), array.dtype)
    if len(rows) == 0:
        return out
    if rows.min() < 0 or rows.max() >= array.shape[0]:
        raise IndexError(f"rows out of range for {array.shape[0]} rows")
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    chunk_of = ordered // array.chunks[0]
    starts = np.flatnonzero(np.r_[True, chunk_of[1:] != chunk_of[:-1]])
    ends = np.r_[starts[1:], len(ordered)]

    def read(span):
        s, e = span
        lo, hi = int(ordered[s]), int(ordered[e - 1]) + 1
        return s, e, array[lo:hi][ordered[s:e] - lo]

    if len(starts) == 1:
        parts = [read((starts[0], ends[0]))]
    else:
        with ThreadPoolExecutor(min(threads, len(starts))) as pool:
            parts = list(pool.map(read, zip(starts, ends)))
    for s, e, block in parts:
        out[order[s:e]] = block
    return out


def mark_complete(root: zarr.Group) -> None:
    """Mark the store complete. Call last, after every array and obs are written."""
    root.attrs["complete"] = True


def open_cells(path: str | os.PathLike, *, require_complete: bool = True, mode: str = "r") -> zarr.Group:
    """Open a cells.zarr; raise `IncompleteStoreError` unless it is complete (or not required)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no cells store at {path}")
    try:
        root = zarr.open_group(str(path), mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
        raise ValueError(f"{path} is not a cellkit cells store (no Zarr group)") from err
    if root.attrs.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cellkit cells store (format={root.attrs.get('format')!r})")
    if require_complete and root.attrs.get("complete") is not True:
        raise IncompleteStoreError(
            f"{path} is incomplete: its writer did not finish. Run the command that writes it again; "
            "it resumes where it stopped.")
    return root


def read_cells(path: str | os.PathLike):
    """Open a complete cells.zarr lazily.

    Returns
    -------
    images : dask array (N, C, S, S) uint16, one dask chunk per write block
    masks : dask array (N, 2, S, S) bool
    obs : DataFrame, one row per cell in store order, index = cell_id
    """
    import dask.array as da

    root = open_cells(path)
    arrays = []
    for name in ("images", "masks"):
        array = root[name]
        rows = int(root.attrs.get("block_cells", array.chunks[0]))
        arrays.append(da.from_zarr(array, chunks=(rows,) + array.shape[1:]))
    return arrays[0], arrays[1], read_obs(root)


def write_cells(path: str | os.PathLike, images: np.ndarray, masks: np.ndarray, obs: pd.DataFrame, *,
                channels: list[str], attrs: dict | None = None, chunk_cells: int = DEFAULT_CHUNK_CELLS,
                block_cells: int = DEFAULT_BLOCK_CELLS, sharded: bool = False, overwrite: bool = False) -> Path:
    """Write in-memory crops as a complete cells.zarr (for importers and small data).

    images (N, C, S, S) uint16; masks (N, 2, S, S) bool; obs with N rows.
    """
    images = np.asarray(images)
    masks = np.asarray(masks, dtype=bool)
    n, c, s, s2 = images.shape
    if s != s2 or len(channels) != c or masks.shape != (n, 2, s, s) or len(obs) != n:
        raise ValueError(f"inconsistent shapes: images {images.shape}, masks {masks.shape}, "
                         f"obs {len(obs)} rows, {len(channels)} channels")
    if images.dtype != np.uint16:
        raise TypeError(f"images must be uint16, got {images.dtype}")
    root = create_cells_store(path, n, channels, s, chunk_cells=chunk_cells, block_cells=block_cells,
                              sharded=sharded, attrs=attrs, overwrite=overwrite)
    root["images"].with_config(WRITE_CONFIG)[:] = images
    root["masks"].with_config(WRITE_CONFIG)[:] = masks
    write_obs(root, obs.reset_index(drop=True))
    mark_complete(root)
    return Path(path)


def obs_adata(cells):
    """An AnnData with no variables whose obs is the store's obs table, indexed by ``cell_id``.

    Text columns become categoricals (missing values stay missing).
    """
    import anndata as ad

    obs = read_obs(open_cells(cells))
    if "cell_id" not in obs:
        raise ValueError(f"{cells} has no cell_id column in obs: cannot align embeddings by cell")
    obs = obs.drop(columns="cell_id")
    for col in obs.columns:
        if obs[col].dtype == object:
            obs[col] = obs[col].astype("category")
    return ad.AnnData(obs=obs)
