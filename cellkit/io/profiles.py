"""Profiles made elsewhere (CellProfiler, pycytominer) as AnnData, and back.

A profile table has one row per cell or per well: metadata columns and numeric feature
columns. CellProfiler and pycytominer name metadata ``Metadata_<Name>`` (or
``Image_Metadata_<Name>``); cellkit stores them in ``obs`` under the lower-cased name
(``Metadata_Plate`` -> ``plate``) and the features in ``X`` (float32), keeping their names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Mapping

import anndata as ad
import numpy as np
import pandas as pd

from .plate_index import _concentration_key, batch_from_plate

METADATA_PATTERN = re.compile(r"^(?:[A-Za-z]+_)?Metadata_(.+)$")


class ProfileTableError(ValueError):
    """A profile table cannot be turned into profiles (missing columns, no features...)."""


def _read_table(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return pd.read_parquet(path)
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        return pd.read_csv(path, sep="\t" if ".tsv" in name else ",")
    raise ProfileTableError(f"{path}: unknown table format (expected .csv[.gz], .tsv[.gz] or .parquet)")


# Column names taken as metadata even when numeric, in tables without Metadata_ prefixes.
METADATA_NAMES = ("plate", "well", "site", "field", "row", "column", "col", "compound", "concentration", "dose",
                  "moa", "batch", "replicate", "treatment", "cell_line", "time", "control", "label",
                  "crop_index", "field_id", "centroid_y", "centroid_x", "n_cells")  # the last: cellkit's own obs


def _numeric_column(table: pd.DataFrame, col) -> bool:
    """True for numeric columns; a text column whose values are mostly numbers is an error naming the bad row."""
    values = table[col]
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return True
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna() & values.notna()
    if values.notna().sum() >= 10 and bad.mean() <= 0.05 and bad.any():
        row = bad.to_numpy().nonzero()[0][0]
        raise ProfileTableError(f"column {col!r} is numeric except row {row} (value {values.iloc[row]!r}) and "
                                f"{int(bad.sum()) - 1} other(s): fix the value, or name the column in "
                                "--metadata-cols if it is metadata")
    return False


def from_table(table: pd.DataFrame, *, metadata: Mapping[str, str] | Iterable[str] | None = None,
               features: Iterable[str] | None = None, metadata_prefix: bool = True,
               metadata_cols: Iterable[str] | None = None) -> ad.AnnData:
    """Turn a profile table (one row per cell or well) into an AnnData.

    Metadata columns: ``Metadata_<Name>`` / ``<Object>_Metadata_<Name>`` (stored as ``obs[<name
    lower-cased>]``), plus ``metadata`` and ``metadata_cols``. A table with none of these (no
    ``Metadata_`` prefixes) takes as metadata every non-numeric column and the numeric columns named
    like metadata (`METADATA_NAMES`, case-insensitive, e.g. ``Plate``, ``Concentration``), stored
    under their lower-cased names.

    Parameters
    ----------
    table
        Metadata and feature columns.
    metadata
        Extra metadata columns: a list (kept under their own names) or a mapping
        ``{obs_name: column}``. Used beside the ``Metadata_`` columns.
    features
        Feature columns. Default: every numeric column that is not metadata.
    metadata_prefix
        Take columns named ``Metadata_<Name>`` / ``<Object>_Metadata_<Name>`` as metadata.
    metadata_cols
        Columns that are metadata (stored under their lower-cased names); replaces the inference.

    Returns
    -------
    AnnData with ``X`` float32 (rows, features), ``obs`` the metadata (string index
    ``"0", "1", ...`` or ``"<plate>/<well>"`` when plate and well are unique per row),
    ``var_names`` the feature names. A column that is numeric except for a few rows, an absent
    named column, or a table without features raises `ProfileTableError` naming it.
    """
    if isinstance(metadata, Mapping):
        rename = dict(metadata)
    else:
        rename = {c: c for c in (metadata or [])}
    for col in metadata_cols or []:
        if col not in table.columns:
            raise ProfileTableError(f"--metadata-cols column {col!r} is not in the table; columns start with "
                                    f"{list(table.columns[:12])}")
        rename.setdefault(str(col).lower(), col)
    if metadata_prefix:
        for col in table.columns:
            match = METADATA_PATTERN.match(str(col))
            if match and col not in rename.values():
                rename.setdefault(match.group(1).lower(), col)
    if not rename and features is None:  # no Metadata_ columns: infer
        for col in table.columns:
            if str(col).lower() in METADATA_NAMES or not _numeric_column(table, col):
                rename.setdefault(str(col).lower(), col)
    missing = [c for c in rename.values() if c not in table.columns]
    if missing:
        raise ProfileTableError(f"metadata column(s) {missing} not in the table; columns start with "
                                f"{list(table.columns[:12])}")
    meta_cols = set(rename.values())
    if features is None:
        features = [c for c in table.columns if c not in meta_cols and _numeric_column(table, c)]
        if metadata_cols:
            text = [c for c in table.columns if c not in meta_cols and c not in features]
            if text:
                raise ProfileTableError(f"column(s) {text[:10]} are neither numeric features nor in --metadata-cols")
    features = list(features)
    absent = [c for c in features if c not in table.columns]
    if absent:
        raise ProfileTableError(f"feature column(s) {absent[:10]} not in the table")
    if not features:
        raise ProfileTableError(f"the table has no numeric feature columns (metadata: {sorted(meta_cols)[:12]})")
    obs = pd.DataFrame({name: table[col].to_numpy() for name, col in rename.items()}, index=pd.RangeIndex(len(table)))
    if {"plate", "well"} <= set(obs) and not obs.duplicated(["plate", "well"]).any():
        obs.index = (obs["plate"].astype(str) + "/" + obs["well"].astype(str)).to_numpy()
    else:
        obs.index = np.arange(len(obs)).astype(str)
    numbers = table[features].apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna() & table[features].notna()
    if bad.any().any():
        col = bad.any().idxmax()
        row = int(np.flatnonzero(bad[col].to_numpy())[0])
        raise ProfileTableError(f"feature column {col!r} row {row} holds {table[col].iloc[row]!r}, not a number")
    X = numbers.to_numpy(dtype=np.float32)
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index([str(f) for f in features])))
    return adata


def read_profiles(path: str | os.PathLike, **kwargs) -> ad.AnnData:
    """Read profiles from ``.h5ad`` (as is) or a CSV/parquet table (via `from_table`, ``kwargs`` passed on)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no profile file at {path}")
    if path.suffix == ".h5ad":
        from .provenance import check_upstream

        try:
            adata = ad.read_h5ad(path)
        except (OSError, KeyError, ValueError) as err:
            from ..errors import UnreadableFileError, reason

            raise UnreadableFileError(f"{path} is not a readable .h5ad file ({reason(err)})",
                                      "it may be truncated or damaged: write it again with the command that "
                                      "made it") from None
        check_upstream(dict(adata.uns.get("cellkit", {})), path)
        return adata
    if path.suffix == ".zarr" or path.is_dir():
        return ad.read_zarr(path)
    return from_table(_read_table(path), **kwargs)


def join_bbbc021(adata: ad.AnnData, image_csv: str | os.PathLike, moa_csv: str | os.PathLike | None = None, *,
                 plate: str = "plate", well: str = "well") -> ad.AnnData:
    """Add BBBC021 ``compound, concentration, moa, batch`` to profiles by plate and well (in place).

    ``image_csv`` is ``BBBC021_v1_image.csv[.gz]`` (plate, well -> compound, concentration);
    ``moa_csv`` is ``BBBC021_v1_moa.csv`` (compound, concentration -> moa; DMSO gets ``"DMSO"``).
    ``batch`` is the week prefix of the plate. Rows without a match get missing values; a
    table where no row matches raises `ProfileTableError`. Returns ``adata``.
    """
    for col in (plate, well):
        if col not in adata.obs:
            raise ProfileTableError(f"obs has no {col!r} column to join on; obs columns: {list(adata.obs.columns)}")
    images = pd.read_csv(image_csv)
    wells = (images.rename(columns={"Image_Metadata_Plate_DAPI": "plate", "Image_Metadata_Well_DAPI": "well",
                                    "Image_Metadata_Compound": "compound",
                                    "Image_Metadata_Concentration": "concentration"})
             [["plate", "well", "compound", "concentration"]].drop_duplicates(["plate", "well"]))
    keys = pd.DataFrame({"plate": adata.obs[plate].astype(str).to_numpy(), "well": adata.obs[well].astype(str).to_numpy()})
    joined = keys.merge(wells, on=["plate", "well"], how="left")
    if joined["compound"].isna().all():
        raise ProfileTableError(f"no (plate, well) of the profiles is in {image_csv}")
    if moa_csv is not None:
        moa = pd.read_csv(moa_csv)
        moa = moa.assign(_c=_concentration_key(moa["concentration"]))[["compound", "_c", "moa"]]
        joined = joined.assign(_c=_concentration_key(joined["concentration"])).merge(
            moa, on=["compound", "_c"], how="left").drop(columns="_c")
        joined.loc[joined["compound"] == "DMSO", "moa"] = "DMSO"
    for col in [c for c in ("compound", "concentration", "moa") if c in joined]:
        adata.obs[col] = joined[col].to_numpy()
    adata.obs["batch"] = adata.obs[plate].astype(str).map(batch_from_plate).to_numpy()
    return adata


def to_table(adata: ad.AnnData, *, prefix: str = "Metadata_", id_column: str | None = None,
             obsm: list[str] | None = None, features: bool = True) -> pd.DataFrame:
    """Profiles (cells, wells) as a table: ``<prefix><obs column>`` then one column per feature (and per
    embedding dimension of ``obsm``). The one profile-table writer is `cellkit.features.to_pycytominer`
    (parameters there); this is its name beside `read_profiles`, without the id column by default."""
    from ..features.table import to_pycytominer

    return to_pycytominer(adata, obsm=obsm, features=features, prefix=prefix, id_column=id_column)
