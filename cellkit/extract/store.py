"""The output side of an extraction (see `cellkit.extract.run`): check, fingerprint, reuse or replace,
create the skeleton of, verify and finish a cells store."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from .._atomic import atomic_path
from ..io import cells as cellstore
from ..io._chunk_files import write_files
from ..io.plate_index import PATH_PREFIX
from .plan import ExtractInputError


def check_writable(out: Path) -> None:
    """Raise `ExtractInputError` when ``out`` is a file or its folder cannot be written."""
    if out.exists() and not out.is_dir():
        raise ExtractInputError([f"{out} exists and is a file, not a cells store"], title="cannot write the store")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.probe"):
            pass
    except OSError as err:
        raise ExtractInputError([f"{out.parent} is not writable: {err.strerror or err}"],
                                title="cannot write the store") from err


def fingerprint(obs: pd.DataFrame, index: pd.DataFrame, parameters: dict) -> str:
    """sha256 of the parameters, the planned obs and the image paths (a resumed run must match it)."""
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode())
    digest.update(pd.util.hash_pandas_object(obs, index=False).to_numpy().tobytes())
    paths = index[[c for c in index.columns if c.startswith(PATH_PREFIX)]]
    digest.update(pd.util.hash_pandas_object(paths.astype(str), index=False).to_numpy().tobytes())
    return digest.hexdigest()


def remove_derived(path: Path | None) -> None:
    """Delete the cells AnnData at ``path`` when it is an extract output (its store is being replaced)."""
    from ..io.provenance import read_cellkit_uns

    if path is None or not path.exists():
        return
    info = read_cellkit_uns(path)
    if info and info.get("stage") == "extract":
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def open_existing(out: Path, fingerprint: str, overwrite: bool, derived: Path | None = None) -> zarr.Group | None:
    """The store at ``out`` to resume or reuse, or None when a new one must be made. A store that is
    replaced loses its ``derived`` AnnData first, so that no reader ever pairs an old one with a new store."""
    if not out.exists():
        return None
    try:
        root = cellstore.open_cells(out, require_complete=False, mode="r+")
    except ValueError as err:
        raise ExtractInputError([f"{out} exists and is not a cells store ({err}); choose another path"],
                                title="cannot write the store") from err
    if root.attrs.get("extract", {}).get("fingerprint") == fingerprint:
        return root
    if not overwrite:
        raise ExtractInputError([f"{out} holds a cells store made from other inputs or parameters; "
                                 "pass overwrite=True (--overwrite) to replace it"], title="cannot write the store")
    remove_derived(derived)
    shutil.rmtree(out)
    return None


def create_skeleton(out: Path, obs: pd.DataFrame, channels: list[str], size: int, chunk_cells: int,
                    block_cells: int, sharded: bool, attrs: dict) -> zarr.Group:
    """Create the empty store (arrays, full obs, a ``progress/done`` flag per block) in a temporary
    folder and move it to ``out``: a store at ``out`` always has its full skeleton.

    Zarr builds it in memory (a `zarr.storage.MemoryStore`), then its files are written out as they are:
    the same files as building it on disk, without Zarr's existence checks, parent-group updates and
    thread hand-offs per node (about 40% of the skeleton's CPU)."""
    n_blocks = len(cellstore.block_bounds(len(obs), block_cells))
    files: dict = {}
    root = cellstore.create_cells_store(zarr.storage.MemoryStore(store_dict=files), len(obs), channels, size,
                                        chunk_cells=chunk_cells, block_cells=block_cells, sharded=sharded, attrs=attrs)
    cellstore.write_obs(root, obs)
    root.require_group("progress").create_array("done", shape=(n_blocks,), chunks=(1,), dtype=bool,
                                                fill_value=False, chunk_key_encoding=cellstore.CHUNK_KEYS)
    with atomic_path(out) as tmp:
        write_files(tmp, files)
    return zarr.open_group(str(out), mode="r+")


def join_features(root: zarr.Group, n_blocks: int) -> None:
    """Join the blocks' feature rows (``progress/features_<block>``) into ``features``."""
    progress = root["progress"]
    parts = [progress[f"features_{j:06d}"] for j in range(n_blocks)]
    columns = parts[0].attrs["columns"] if parts else []
    if any(p.attrs["columns"] != columns for p in parts):
        raise ValueError("the measure function returned different columns for different fields")
    data = np.concatenate([p[:] for p in parts]) if parts else np.zeros((0, 0), np.float32)
    cellstore.write_features(root, data, columns)


def verify_blocks(out: Path, n_blocks: int) -> None:
    """All write blocks must be flagged done in the store at ``out`` as this process sees it."""
    from ..errors import DistributedOutputError

    done = zarr.open_group(str(out), mode="r")["progress/done"][:] if n_blocks else np.zeros(0, bool)
    if not done.all():
        raise DistributedOutputError(
            f"{int((~done).sum())} of {n_blocks} write blocks reported written are missing from {out} as this "
            "machine sees it; the workers wrote somewhere else",
            "give workers the same file system and absolute paths (cellkit resolves them), then rerun")


def write_adata(root: zarr.Group, path: Path) -> None:
    """Write the cells AnnData (obs + features) of a finished store."""
    from .adata import write_cells_adata

    write_cells_adata(root, path)
