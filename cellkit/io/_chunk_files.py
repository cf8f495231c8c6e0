"""Write whole chunks of a Zarr v3 array on a local disk straight to their files, byte for byte as Zarr does.

Zarr writes a chunk through its codec pipeline on its event-loop thread: for each chunk, an index
walk, a thread hand-off to encode and another to store, and futures between them. For the 64x64
crops of an extraction that machinery cost more CPU than encoding and writing the files (~0.4 ms
per chunk; benchmarks/extract.py). `chunk_writer` does the same work directly for the plain layouts
a cells store uses: regular chunks along the first axis only, no sharding, the ``bytes`` codec
(native little-endian) then at most one of ``blosc`` or ``zstd``, encoded with the same numcodecs
codec and parameters Zarr itself uses. Each file is written atomically (a temporary file renamed
into place), as Zarr's `LocalStore` does. Any other layout gets None: write it through Zarr.
tests/test_cells_readers.py checks that the files are identical to Zarr's.

`write_files` writes out a store built in memory (a new store's skeleton, `cellkit.extract.store`).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def _numcodec(codec):
    """The numcodecs codec Zarr encodes with for ``codec`` (its ``_blosc_codec`` / ``_zstd_codec``), or None."""
    import numcodecs

    if isinstance(codec, BloscCodec) and codec.typesize is not None:
        return numcodecs.Blosc(cname=codec.cname.value, clevel=codec.clevel, shuffle=_SHUFFLE[codec.shuffle.value],
                               blocksize=codec.blocksize, typesize=codec.typesize)
    if isinstance(codec, ZstdCodec):
        return numcodecs.Zstd(level=codec.level, checksum=codec.checksum)
    return None


def chunk_writer(array: zarr.Array) -> Callable[[int, np.ndarray], None] | None:
    """``write(start, rows)``: store ``rows`` at rows ``start:start + len(rows)`` of ``array`` with the bytes
    Zarr would write (every chunk, as Zarr's ``write_empty_chunks=True``): whole chunks only, ``start`` on a
    chunk boundary, the last chunk partial only at the array's end. None when the array's layout is not
    one handled here (see the module): write it through Zarr."""
    meta = array.metadata
    store = array.store
    if meta.zarr_format != 3 or not isinstance(store, zarr.storage.LocalStore) or array.shards is not None:
        return None
    chunks, shape, dtype = tuple(array.chunks), tuple(array.shape), np.dtype(array.dtype)
    if chunks[1:] != shape[1:] or dtype.kind not in "biuf" or getattr(meta, "storage_transformers", ()):
        return None
    codecs = list(meta.codecs)
    if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
        return None
    if dtype.itemsize > 1 and (sys.byteorder != "little" or codecs[0].endian is None
                               or codecs[0].endian.value != "little"):
        return None
    encode = _numcodec(codecs[1]) if len(codecs) == 2 else None
    if len(codecs) == 2 and encode is None:
        return None
    folder = Path(store.root) / array.path
    fill = array.fill_value
    step = chunks[0]

    def write(start: int, rows: np.ndarray) -> None:
        rows = np.asarray(rows)
        if start % step or rows.shape[1:] != shape[1:] or start + len(rows) > shape[0]:
            raise ValueError(f"rows {start}:{start + len(rows)} {rows.shape} do not cover whole chunks of {shape}")
        if (start + len(rows)) % step and start + len(rows) != shape[0]:
            raise ValueError(f"rows {start}:{start + len(rows)} end inside a chunk of {shape}")
        for i in range(0, len(rows), step):
            data = np.ascontiguousarray(rows[i:i + step], dtype=dtype)
            if len(data) < step:  # the array's last chunk: Zarr stores it whole, padded with the fill value
                whole = np.full(chunks, fill, dtype=dtype)
                whole[:len(data)] = data
                data = whole
            payload = encode.encode(data) if encode is not None else data.tobytes()
            key = meta.encode_chunk_key(((start + i) // step,) + (0,) * (len(shape) - 1))
            if "/" in key:  # nested chunk keys (cells stores before format 3)
                (folder / key).parent.mkdir(parents=True, exist_ok=True)
            _put(folder / key, payload)

    return write


def _put(path: Path, payload) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file + rename), as `zarr.storage.LocalStore` does."""
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_files(folder: str | os.PathLike, files: dict) -> None:
    """Write the contents of a `zarr.storage.MemoryStore` (its ``store_dict``: key -> Buffer) as the files of
    a local store in ``folder`` (new or empty, e.g. a temporary folder moved into place afterwards)."""
    folder = Path(folder)
    made = set()
    for key, value in files.items():
        path = folder / key
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        with open(path, "wb") as f:
            f.write(value.as_buffer_like())
