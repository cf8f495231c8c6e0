"""Plate indexes from what users have (`cellkit.io.plate_index` holds the schema, checks and files):
BBBC021's CSVs (`from_bbbc021`), a generic CSV (`from_csv`), a file-name pattern (`from_pattern`), a folder
of images (`from_folder`). Each returns a checked index (`finalize_index`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ._columns import PATH_PREFIX
from .plate_index import (
    BBBC021_CHANNELS, METADATA_COLUMNS, PlateIndexError, _concentration_key, _read_table, _require_columns,
    _resolve, batch_from_plate, finalize_index, join_metadata,
)


def from_bbbc021(
    image_csv: str | os.PathLike,
    moa_csv: str | os.PathLike | None,
    root: str | os.PathLike,
    *,
    check_files: bool = True,
) -> pd.DataFrame:
    """Build the plate index from BBBC021's own ``BBBC021_v1_image.csv`` and ``BBBC021_v1_moa.csv``.

    Image paths are ``root / Image_PathName_<ch> / Image_FileName_<ch>``; the site is read from
    the file name (``_s<site>_``); batch is the plate's week prefix; MOA is joined on
    compound + concentration (missing where the MOA table has no row).
    """
    image = pd.read_csv(image_csv)
    needed = ["Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI", "Image_Metadata_Compound",
              "Image_Metadata_Concentration"]
    needed += [f"Image_{k}_{ch}" for ch in BBBC021_CHANNELS for k in ("FileName", "PathName")]
    _require_columns(image, needed, f"BBBC021 image table {image_csv}")

    site = image["Image_FileName_DAPI"].astype(str).str.extract(r"_s(\d+)_", expand=False)
    if site.isna().any():
        bad = image.loc[site.isna(), "Image_FileName_DAPI"].tolist()
        raise PlateIndexError([f"no site (_s<N>_) in file name {b!r}" for b in bad], title="cannot read sites")
    root = Path(root)
    index = pd.DataFrame({
        "plate": image["Image_Metadata_Plate_DAPI"].astype(str),
        "well": image["Image_Metadata_Well_DAPI"].astype(str),
        "site": site.astype(int),
        "compound": image["Image_Metadata_Compound"].astype(str),
        "concentration": image["Image_Metadata_Concentration"].astype(float),
    })
    index["batch"] = index["plate"].map(batch_from_plate)
    for code, name in BBBC021_CHANNELS.items():
        rel = image[f"Image_PathName_{code}"].astype(str) + "/" + image[f"Image_FileName_{code}"].astype(str)
        index[PATH_PREFIX + name] = [_resolve(root, r) for r in rel]
    index["moa"] = _join_moa(index, moa_csv)
    return finalize_index(index, root=root, check_files=check_files)


def _join_moa(index: pd.DataFrame, moa_csv) -> pd.Series:
    if moa_csv is None:
        return pd.Series(pd.NA, index=index.index, dtype="object")
    moa = pd.read_csv(moa_csv)
    _require_columns(moa, ["compound", "concentration", "moa"], f"MOA table {moa_csv}")
    key = moa["compound"].astype(str) + "@" + _concentration_key(moa["concentration"]).astype(str)
    dup = key[key.duplicated()]
    if len(dup):
        raise PlateIndexError([f"MOA table lists {k} twice" for k in dup], title="duplicate MOA rows")
    lookup = dict(zip(key, moa["moa"].astype(str)))
    field_key = index["compound"] + "@" + _concentration_key(index["concentration"]).astype(str)
    return field_key.map(lookup).astype("object")


def from_csv(
    csv: str | os.PathLike | pd.DataFrame,
    *,
    root: str | os.PathLike,
    channels: Mapping[str, str],
    columns: Mapping[str, str] | None = None,
    check_files: bool = True,
) -> pd.DataFrame:
    """Build the plate index from a generic table with one row per field.

    Parameters
    ----------
    csv
        CSV or parquet path, or a DataFrame.
    root
        Image root; relative paths in the table are taken under it.
    channels
        Channel name -> column holding that channel's image path, in channel order,
        e.g. ``{"DNA": "FileName_DNA", "Actin": "FileName_Actin"}``.
    columns
        cellkit name -> user column for metadata (``plate, well, site, batch, compound,
        concentration, moa``). Names absent here are taken from a column of the same name
        when there is one; ``plate`` and ``well`` are required, ``site`` defaults to 1,
        ``batch`` to the plate name, ``compound``/``concentration``/``moa`` to missing.
    """
    table = csv if isinstance(csv, pd.DataFrame) else _read_table(csv, dtype=str)  # keep plate "0042" as is
    columns = dict(columns or {})
    for name in METADATA_COLUMNS[1:]:
        if name not in columns and name in table.columns:
            columns[name] = name
    _require_columns(table, list(columns.values()) + list(channels.values()), f"table {csv!r:.80}")
    missing = [n for n in ("plate", "well") if n not in columns]
    if missing:
        raise PlateIndexError([f"no column given for {n!r}" for n in missing], title="cannot build plate index")
    root = Path(root)
    index = pd.DataFrame({name: table[col].values for name, col in columns.items()})
    index["plate"] = index["plate"].astype(str)
    index["well"] = index["well"].astype(str)
    index["site"] = index["site"].astype(int) if "site" in index else 1
    if "batch" not in index:
        index["batch"] = index["plate"]
    for ch, col in channels.items():
        index[PATH_PREFIX + ch] = [_resolve(root, str(p)) for p in table[col]]
    return finalize_index(index, root=root, check_files=check_files)


def _pattern_regex(pattern: str) -> re.Pattern:
    """``{plate}/{well}_s{site}_w{channel}*.tif`` -> a regex with named groups."""
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}|\*", pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>[^/]+?)" if m.group(1) else "[^/]*")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + r"\Z")


def from_pattern(
    root: str | os.PathLike,
    pattern: str,
    *,
    channels: Mapping[str, str],
    metadata: pd.DataFrame | str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Build the plate index from file names under ``root``.

    ``pattern`` is a path relative to root with fields ``{well}`` and ``{channel}`` (required),
    ``{plate}`` (default: the name of ``root``), ``{site}`` (default 1) and ``{batch}`` (default:
    the plate); ``*`` matches any characters
    within one path component. ``channels`` maps the ``{channel}`` token to a channel
    name, in channel order, e.g. ``{"1": "DNA", "2": "Tubulin", "4": "Actin"}``.
    ``metadata`` (optional, table or CSV path) is joined with `join_metadata` and may carry
    ``compound, concentration, moa, batch``.
    """
    regex = _pattern_regex(pattern)
    if "channel" not in regex.groupindex or "well" not in regex.groupindex:
        raise PlateIndexError(["pattern needs {well} and {channel} fields"], title=f"bad pattern {pattern!r}")
    root = Path(os.path.abspath(root))
    rows = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        m = regex.match(path.relative_to(root).as_posix())
        if m and m["channel"] in channels:
            rows.append({**m.groupdict(), "path": str(path)})
    if not rows:
        raise PlateIndexError([f"no file under {root} matches {pattern!r}"], title="empty plate index")
    files = pd.DataFrame(rows)
    if "plate" not in files:  # one plate: named after the image folder
        files["plate"] = root.name
    files["channel"] = files["channel"].map(channels)
    keys = [k for k in ("plate", "well", "site", "batch") if k in files]
    dup = files[files.duplicated(keys + ["channel"], keep=False)]
    if len(dup):
        raise PlateIndexError([f"several files for one field and channel: {p}" for p in dup["path"]],
                              title="ambiguous pattern")
    wide = files.pivot(index=keys, columns="channel", values="path")
    missing = [f"{'/'.join(map(str, k))}: no {ch} image" for ch in channels.values()
               for k in (wide.index[wide[ch].isna()] if ch in wide else wide.index)]
    if missing:
        raise PlateIndexError(missing, title="incomplete fields")
    wide = wide[list(channels.values())].add_prefix(PATH_PREFIX).reset_index()
    wide["site"] = wide["site"].astype(int) if "site" in wide else 1
    if "batch" not in wide:
        wide["batch"] = wide["plate"]
    if metadata is not None:
        wide = join_metadata(wide, metadata)
    return finalize_index(wide, root=root, check_files=True)


IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


def from_folder(folder: str | os.PathLike, *, channel: str = "image", plate: str | None = None,
                regex: str | None = None) -> pd.DataFrame:
    """A plate index of a folder of single-channel images (``.tif``, ``.tiff``, ``.png``), one field per file.

    ``plate``: default the folder's name. ``regex``: a pattern searched in each file name whose
    named groups ``well`` and ``site`` (optional) fill those columns (e.g. BBBC006
    ``r"_(?P<well>[a-p][0-9]{2})_s(?P<site>[0-9])"``); default: well = the file's stem, site 1.
    Files are in name order.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PlateIndexError([f"{folder} is not a folder"], title="no images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PlateIndexError([f"no {'/'.join(IMAGE_SUFFIXES)} file in {folder}"], title="no images")
    pattern = re.compile(regex) if regex else None
    rows = []
    for path in files:
        well, site = path.stem, 1
        if pattern is not None:
            m = pattern.search(path.name)
            if m is None:
                raise PlateIndexError([f"{path.name} does not match {regex!r}"], title="file name without well")
            well = m.groupdict().get("well") or well
            site = int(m.groupdict().get("site") or 1)
        rows.append({"plate": plate or folder.name, "well": well.upper() if pattern else well, "site": site,
                     "batch": plate or folder.name, "compound": pd.NA, "concentration": np.nan, "moa": pd.NA,
                     PATH_PREFIX + channel: str(path.resolve())})
    return finalize_index(pd.DataFrame(rows), check_files=True)
