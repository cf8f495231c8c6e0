"""Plate index of OME-Zarr HCS plates (`from_omezarr`): wells, fields and channel names from the NGFF
metadata, one ``path_<channel>`` plane reference per field (`cellkit.io.omezarr`)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ._columns import PATH_PREFIX
from .omezarr import FIELD_METADATA, FORMAT, _image_meta, _one_line, _open_array, is_omezarr_plate, plane_ref
from .plate_index import PlateIndexError, finalize_index


def _plate_root_attrs(path: Path) -> dict:
    import zarr

    return dict(zarr.open_group(str(path), mode="r").attrs)


def from_omezarr(path: str | os.PathLike) -> pd.DataFrame:
    """Plate index of one OME-Zarr HCS plate, or of every plate (``*.zarr`` with plate metadata)
    directly inside a folder. Fields are not read (see the module docstring for the values).

    Raises `PlateIndexError` listing every problem (no plate metadata, a missing well or field,
    channel labels that differ between fields, a cellkit conversion left incomplete).
    """
    path = Path(os.path.abspath(path))
    _image_meta.cache_clear()  # metadata may have been rewritten since it was cached
    if not path.exists():
        raise PlateIndexError([f"{path} does not exist"], title="cannot index OME-Zarr")
    if is_omezarr_plate(path):
        plates = [path]
    else:
        plates = sorted(p for p in path.iterdir() if p.is_dir() and p.suffix == ".zarr" and is_omezarr_plate(p))
        if not plates:
            raise PlateIndexError([f"{path} has no OME-NGFF 'plate' metadata and holds no plate (*.zarr)"],
                                  title="not an OME-Zarr HCS plate")
    rows, problems = [], []
    for plate in plates:
        plate_rows, plate_problems = _plate_rows(plate)
        rows += plate_rows
        problems += plate_problems
    channels = {tuple(k for k in r if k.startswith(PATH_PREFIX)) for r in rows}
    if len(channels) > 1:
        problems.append(f"fields have different channels: {sorted(channels)}")
    if problems:
        raise PlateIndexError(problems, title="cannot index OME-Zarr plate")
    return finalize_index(pd.DataFrame(rows), check_files=True)


def plate_name(path: Path, name: str | None) -> str:
    """The plate's ``name`` metadata, else its folder name without ``.ome.zarr`` / ``.zarr``."""
    name = name or path.name
    for suffix in (".ome.zarr", ".zarr"):
        name = name.removesuffix(suffix)
    return str(name)


def _plate_rows(path: Path) -> tuple[list[dict], list[str]]:
    root = _plate_root_attrs(path)
    cellkit = root.get("cellkit", {})
    if root.get("format") == FORMAT and not cellkit.get("complete"):
        return [], [f"{path}: the conversion did not finish; run `cellkit convert` again to complete it"]
    import ngio

    try:
        plate = ngio.open_ome_zarr_plate(str(path), mode="r")
        name = plate_name(path, plate.meta.plate.name)
        images = plate.images_paths(max_workers=1)
    except Exception as err:  # noqa: BLE001 - invalid plate metadata, reported
        return [], [f"{path}: not a readable OME-Zarr HCS plate: {_one_line(err)}"]
    rows, problems, positions = [], [], {}
    first: tuple[str, ...] | None = None
    for image_path in images:
        row, col, field = image_path.split("/")
        group = str(path / image_path)
        positions[(row, col)] = pos = positions.get((row, col), 0) + 1
        try:
            _, axes, labels = _image_meta(group)
        except (FileNotFoundError, ValueError) as err:
            problems.append(f"{name}: field {image_path}: {err}")
            continue
        if first is None:
            first = _first_channels(group, axes, labels, problems)
            if first is None:
                continue
        names = labels if labels and all(labels) else tuple(f"c{i}" for i in range(len(first)))
        if names != first:
            problems.append(f"{name}: field {image_path} has channels {list(names)}, the first field {list(first)}")
            continue
        meta = _field_attrs(group)
        record = {"plate": name, "well": f"{row}{col}", "site": int(field) if field.isdigit() else pos,
                  "batch": meta.get("batch") or name}
        record.update({k: meta.get(k) for k in FIELD_METADATA[1:]})
        record.update({PATH_PREFIX + ch: plane_ref(group, i) for i, ch in enumerate(first)})
        rows.append(record)
    if not rows and not problems:
        problems.append(f"{name}: the plate lists no fields")
    return rows, problems


def _first_channels(group: str, axes, labels, problems) -> tuple[str, ...] | None:
    """Channel names of the first field: its omero labels, else ``c0, c1, ...``."""
    try:
        array, _ = _open_array(group)
    except Exception as err:  # noqa: BLE001 - reported
        problems.append(f"{group}: {err}")
        return None
    n = array.shape[axes.index("c")] if "c" in axes else 1
    if labels and all(labels) and len(labels) != n:
        problems.append(f"{group}: {len(labels)} omero channel labels for {n} channel(s)")
        return None
    names = tuple(labels) if labels and all(labels) else tuple(f"c{i}" for i in range(n))
    if len(set(names)) != len(names):
        problems.append(f"{group}: channel labels are not unique: {list(names)}")
        return None
    return names


def _field_attrs(group: str) -> dict:
    import zarr

    return dict(zarr.open_group(group, mode="r").attrs.get("cellkit", {}))
