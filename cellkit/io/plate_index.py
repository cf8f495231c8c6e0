"""Plate index: one row per field, with metadata and one image path per channel.

Columns (see DESIGN.md): ``field_id, plate, well, site, batch, compound,
concentration, moa`` and ``path_<channel>`` for each channel, in channel order.
``field_id`` is ``<plate>/<well>/<site>``. Builders live in `cellkit.io.plate_sources`. In memory, paths are absolute strings. On disk
(`write_index`), a path under the index file's folder is stored relative to that folder and
every other path absolute; `read_index` resolves relative paths from the index file's folder, so
an output folder can be moved and its index read from any working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .._atomic import atomic_path
from ..errors import reason
from ._columns import PATH_PREFIX, channels_of
from .images import image_exists, image_shape

METADATA_COLUMNS = ["field_id", "plate", "well", "site", "batch", "compound", "concentration", "moa"]

# BBBC021 file-name channel codes and the names cellkit uses for them.
BBBC021_CHANNELS = {"DAPI": "DNA", "Tubulin": "Tubulin", "Actin": "Actin"}


class PlateIndexError(ValueError):
    """A plate index or its inputs are invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: list[str], *, title: str = "invalid plate index"):
        self.problems = list(problems)
        shown = self.problems[:20]
        more = len(self.problems) - len(shown)
        text = f"{title}: {len(self.problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in shown)
        if more:
            text += f"\n  ... and {more} more"
        super().__init__(text)


def batch_from_plate(plate: str) -> str:
    """BBBC021 batch = the week prefix of the plate name (``Week4_27481`` -> ``Week4``)."""
    return str(plate).split("_")[0]


def _require_columns(table: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PlateIndexError(
            [f"missing column {c!r}" for c in missing] + [f"columns present: {list(table.columns)}"],
            title=f"{what} lacks required columns",
        )


def _concentration_key(values) -> pd.Series:
    return pd.Series(np.round(np.asarray(values, dtype=float), 9), index=getattr(values, "index", None))


def _resolve(root: Path, rel: str) -> str:
    return os.path.normpath(os.path.join(os.path.abspath(root), rel))


OPTIONAL_METADATA = ["batch", "compound", "concentration", "moa"]


def join_metadata(index: pd.DataFrame, metadata: pd.DataFrame | str | os.PathLike,
                  on: list[str] | None = None) -> pd.DataFrame:
    """Join a metadata table (CSV/parquet path or DataFrame) onto a plate index.

    ``on``: key columns (default: every index column among ``plate, well, site, field_id`` that
    the table also has; at least one is needed). The table's ``batch, compound, concentration,
    moa`` columns (any it has) replace the index's; other columns are ignored. Every key row of
    the table must be unique; index rows without a match keep missing values.
    Raises `PlateIndexError`.
    """
    table = metadata if isinstance(metadata, pd.DataFrame) else _read_table(metadata, dtype=str)
    keys = list(on) if on else [k for k in ("plate", "well", "site", "field_id") if k in table.columns]
    if not keys:
        raise PlateIndexError([f"the metadata table has none of the key columns plate, well, site, field_id; "
                               f"its columns: {list(table.columns)}"], title="cannot join metadata")
    _require_columns(table, keys, "metadata table")
    values = [c for c in OPTIONAL_METADATA if c in table.columns]
    if not values:
        raise PlateIndexError([f"the metadata table has none of the columns {OPTIONAL_METADATA}; "
                               f"its columns: {list(table.columns)}"], title="cannot join metadata")
    table = table[keys + values].copy()
    for k in keys:
        table[k] = table[k].astype("int64") if k == "site" else table[k].astype(str)
    dup = table[table.duplicated(keys, keep=False)]
    if len(dup):
        raise PlateIndexError([f"metadata table lists {tuple(r)} more than once" for r in
                               dup[keys].drop_duplicates().itertuples(index=False)], title="ambiguous metadata")
    out = index.drop(columns=[c for c in values if c in index.columns]).merge(table, on=keys, how="left")
    if "batch" in values:
        out["batch"] = out["batch"].where(out["batch"].notna(), out["plate"])
    return out


def _read_table(path, dtype=None) -> pd.DataFrame:
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=dtype)



def finalize_index(index: pd.DataFrame, *, root=None, check_files: bool = True,
                   check_shapes: bool = False) -> pd.DataFrame:
    """Order columns, set dtypes and ``field_id``, and validate (see `validate_index`)."""
    index = index.copy()
    for name in ("compound", "concentration", "moa"):  # optional metadata: missing when absent
        if name not in index:
            index[name] = np.nan if name == "concentration" else None
    if "batch" not in index:
        index["batch"] = index["plate"]
    bad = pd.to_numeric(index["concentration"], errors="coerce").isna() & index["concentration"].notna()
    if bad.any():
        raise PlateIndexError([f"concentration {v!r} is not a number" for v in index.loc[bad, "concentration"].unique()])
    index["concentration"] = pd.to_numeric(index["concentration"], errors="coerce").astype("float64")
    for name in ("compound", "moa"):
        index[name] = index[name].astype("object").where(index[name].notna(), None)
    index["field_id"] = index["plate"].astype(str) + "/" + index["well"].astype(str) + "/" + index["site"].astype(str)
    paths = [c for c in index.columns if c.startswith(PATH_PREFIX)]
    index = index[METADATA_COLUMNS + paths].reset_index(drop=True)
    index = index.astype({"plate": str, "well": str, "site": "int64", "batch": str, "compound": "object",
                          "concentration": "float64", "moa": "object"})
    validate_index(index, root=root, check_files=check_files, check_shapes=check_shapes)
    return index


def validate_index(index: pd.DataFrame, *, root=None, check_files: bool = True,
                   check_shapes: bool = False) -> None:
    """Raise `PlateIndexError` listing every problem found.

    Checks: required columns, at least one channel, plate and well names that cannot name a
    folder of a store (the field_id ``<plate>/<well>/<site>`` is a store path), duplicate fields, paths that escape
    ``root`` (when given), missing image files (``check_files``), channels of one field with
    different shapes and fields of different shapes (``check_shapes``; reads TIFF headers only).
    """
    problems = [f"missing column {c!r}" for c in METADATA_COLUMNS if c not in index.columns]
    channels = channels_of(index)
    if not channels:
        problems.append("no channel path columns (path_<channel>)")
    if problems:
        raise PlateIndexError(problems)
    problems += _store_name_problems(index)
    problems += [f"duplicate field {f}" for f in index.loc[index["field_id"].duplicated(), "field_id"]]
    path_cols = [PATH_PREFIX + c for c in channels]
    if root is not None:
        root_real = os.path.realpath(root)
        for col in path_cols:
            for p in index[col]:
                real = os.path.realpath(p)
                if os.path.commonpath([root_real, real]) != root_real:
                    problems.append(f"{col} path escapes the image root {root}: {p}")
    if check_files:
        for col in path_cols:
            problems += [f"missing image file: {p}" for p in index[col] if not image_exists(p)]
    if check_shapes and not problems:
        problems += _shape_problems(index, path_cols)
    if problems:
        raise PlateIndexError(problems)


def _store_name_problems(index: pd.DataFrame) -> list[str]:
    """Plate / well values that are not safe as one path component of a store (field_id)."""
    problems = []
    for column in ("plate", "well"):
        for value in pd.unique(index[column].astype(str)):
            why = ("is empty" if not value.strip() else "is '.' or '..'" if value in (".", "..")
                   else "contains '/' or '\\'" if "/" in value or "\\" in value
                   else "contains control characters" if any(ord(ch) < 32 for ch in value)
                   else "starts with '__' (reserved by Zarr)" if value.startswith("__") else None)
            if why:
                problems.append(f"{column} {value!r} {why}: it cannot name a folder of the label and cells stores; "
                                f"rename it in the table")
    return problems


def _shape_problems(index: pd.DataFrame, path_cols: list[str]) -> list[str]:
    problems, shapes = [], {}
    for row in index.itertuples(index=False):
        field_shapes = {}
        for col in path_cols:
            try:
                field_shapes[col] = image_shape(getattr(row, col))
            except Exception as err:  # noqa: BLE001 - reported, not swallowed
                problems.append(f"{row.field_id}: cannot read {getattr(row, col)}: {reason(err)}")
        if len(set(field_shapes.values())) > 1:
            problems.append(f"{row.field_id}: channels of different shapes {field_shapes}")
        elif field_shapes:
            shapes.setdefault(next(iter(field_shapes.values())), []).append(row.field_id)
    if len(shapes) > 1:
        summary = {str(s): f"{len(f)} fields, e.g. {f[0]}" for s, f in shapes.items()}
        problems.append(f"fields of different shapes: {summary}")
    return problems


PATHS_KEY = "cellkit.paths"
PATHS_RELATIVE = "relative-to-index-folder"


def _stored_path(path: str, folder: str) -> str:
    """``path`` relative to ``folder`` when it lies under it, else absolute (POSIX separators)."""
    full = os.path.abspath(path)
    if os.path.commonpath([folder, full]) == folder:
        return Path(os.path.relpath(full, folder)).as_posix()
    return full


def write_index(index: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Save a plate index as parquet, atomically.

    Image paths under the index file's folder are stored relative to it, others absolute
    (relative paths in ``index`` are taken from the current directory); the table's attrs
    (kept in the parquet metadata) record the convention so that `read_index` resolves them
    from the index file's folder.
    """
    path = Path(path)
    folder = os.path.abspath(path.parent)
    stored = index.copy()
    for col in [c for c in stored.columns if c.startswith(PATH_PREFIX)]:
        stored[col] = [_stored_path(str(p), folder) for p in stored[col]]
    stored.attrs = {**index.attrs, PATHS_KEY: PATHS_RELATIVE}
    with atomic_path(path) as tmp:
        stored.to_parquet(tmp, index=False)
    return path


def read_index(path: str | os.PathLike, *, check_files: bool = False) -> pd.DataFrame:
    """Read a plate index written by `write_index`, with absolute image paths, and validate its columns.

    Relative paths are resolved from the index file's folder (an index written before cellkit
    recorded this convention resolves them from the current directory, as it was written).
    """
    index = pd.read_parquet(path)
    relative_to_file = index.attrs.get(PATHS_KEY) == PATHS_RELATIVE
    base = os.path.abspath(Path(path).parent) if relative_to_file else os.getcwd()
    for col in [c for c in index.columns if c.startswith(PATH_PREFIX)]:
        index[col] = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p)) for p in index[col].astype(str)]
    validate_index(index, check_files=check_files)
    return index
