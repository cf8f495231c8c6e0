"""The single-cell Zarr store (``cells.zarr``, Zarr v3).

Layout::

    cells.zarr/
      images   (N, C, S, S) uint16, chunked along N, compressed
      masks    (N, 2, S, S) bool: nucleus, cell (of the centre cell)
      obs/     one 1-D array per column (N,), in row order; attrs["columns"] gives the order
      attrs:   format, format_version, channels, crop_size, n_cells, source, cellkit version,
               complete (True only once every cell is written; written last)

Readers refuse a store whose ``complete`` attribute is not True.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from .. import __version__

FORMAT = "cellkit.cells"
FORMAT_VERSION = 1
DEFAULT_CHUNK_CELLS = 256


class IncompleteStoreError(RuntimeError):
    """A store was opened for reading before its writer marked it complete."""


def create_cells_store(path: str | os.PathLike, n_cells: int, channels: list[str], crop_size: int, *,
                       chunk_cells: int = DEFAULT_CHUNK_CELLS, attrs: dict | None = None,
                       overwrite: bool = False) -> zarr.Group:
    """Create an empty cells.zarr (not yet complete) and return its root group.

    ``images`` and ``masks`` are chunked ``(chunk_cells, C, S, S)``: writers that own whole
    chunks never write the same chunk.
    """
    root = zarr.open_group(str(path), mode="w" if overwrite else "w-", zarr_format=3)
    shape = (int(n_cells), len(channels), int(crop_size), int(crop_size))
    chunks = (max(1, min(int(chunk_cells), max(int(n_cells), 1))),) + shape[1:]
    compressors = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
    root.create_array("images", shape=shape, chunks=chunks, dtype="uint16", compressors=compressors, fill_value=0)
    root.create_array("masks", shape=(shape[0], 2) + shape[2:], chunks=chunks[:1] + (2,) + shape[2:], dtype="bool",
                      compressors=compressors, fill_value=False)
    root.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "channels": list(channels),
                       "crop_size": int(crop_size), "n_cells": int(n_cells), "cellkit_version": __version__,
                       "complete": False, **(attrs or {})})
    return root


def write_obs(root: zarr.Group, obs: pd.DataFrame) -> None:
    """Write the obs table (one row per cell, store order) as one array per column under ``obs/``.

    String columns are stored as variable-length UTF-8; missing strings as ``""`` with a
    ``<column>__missing`` bool array beside them only when some are missing.
    """
    group = root.require_group("obs")
    for name in list(group.array_keys()):
        del group[name]
    columns = ["cell_id"] + [c for c in obs.columns if c != "cell_id"] if "cell_id" in obs.columns else list(obs.columns)
    for col in columns:
        values = obs[col]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            data = values.to_numpy()
        else:
            missing = values.isna().to_numpy()
            if missing.any():
                group.create_array(f"{col}__missing", data=missing)
            data = np.asarray(values.fillna("").astype(str).to_numpy(), dtype=object)
            group.create_array(col, shape=data.shape, dtype=str, chunks=(max(len(data), 1),))
            if len(data):
                group[col][:] = data
            continue
        group.create_array(col, data=data)
    group.attrs["columns"] = columns


def read_obs(root: zarr.Group) -> pd.DataFrame:
    """Read the obs table written by `write_obs`."""
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


def mark_complete(root: zarr.Group) -> None:
    """Mark the store complete. Call last, after every array and obs are written."""
    root.attrs["complete"] = True


def open_cells(path: str | os.PathLike, *, require_complete: bool = True) -> zarr.Group:
    """Open a cells.zarr for reading; raise `IncompleteStoreError` unless it is complete."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no cells store at {path}")
    root = zarr.open_group(str(path), mode="r")
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
    images : dask array (N, C, S, S) uint16
    masks : dask array (N, 2, S, S) bool
    obs : DataFrame, one row per cell in store order
    """
    import dask.array as da

    root = open_cells(path)
    return da.from_zarr(root["images"]), da.from_zarr(root["masks"]), read_obs(root)


def write_cells(path: str | os.PathLike, images: np.ndarray, masks: np.ndarray, obs: pd.DataFrame, *,
                channels: list[str], attrs: dict | None = None, chunk_cells: int = DEFAULT_CHUNK_CELLS,
                overwrite: bool = False) -> Path:
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
    root = create_cells_store(path, n, channels, s, chunk_cells=chunk_cells, attrs=attrs, overwrite=overwrite)
    root["images"][:] = images
    root["masks"][:] = masks
    write_obs(root, obs.reset_index(drop=True))
    mark_complete(root)
    return Path(path)
