"""Write OME-Zarr (OME-NGFF 0.5, Zarr v3) HCS plates: field images and segmentation labels.

One plate per ``<out>/<plate>.ome.zarr``, laid out ``<row>/<column>/<site>`` (well ``B03`` -> row
``B``, column ``03``; the field path is the plate index ``site``), written with ngio (`ngio.create_empty_plate`,
`ngio.create_ome_zarr_from_array`, `OmeZarrContainer.derive_label`):

- images: axes ``c, y, x``, dtype as stored, chunks ``(1, chunk, chunk)``, a 2x pyramid
  (``levels`` downsampled levels), ``omero`` channel labels = the index's channel names (colours and
  display windows from ngio); pixel size 1 (the plate index does not record one);
- labels (optional): ``labels/nuclei`` and ``labels/cells``, axes ``y, x``, uint32, the values of
  ``labels.zarr`` unchanged (nearest-neighbour pyramid), ``image-label`` metadata.

Resumable: each field group's ``cellkit`` attributes hold ``complete`` (images) and
``labels_complete``, written last; a rerun skips what is complete and redoes the rest. The plate
root's ``cellkit.complete`` is set when every field is done; `cellkit.io.omezarr_index.from_omezarr`
refuses a plate whose conversion did not finish. The root ``format`` attribute is ``cellkit.ome-zarr``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ._columns import channels_of
from .omezarr import FIELD_METADATA, FORMAT

WELL = re.compile(r"^(?P<row>[A-Za-z]+)(?P<col>\d+)\Z")

def split_well(well: str) -> tuple[str, str]:
    """``"B03"`` -> ``("B", "03")``. Raises ValueError for a well that is not row letters + column digits."""
    m = WELL.match(str(well))
    if not m:
        raise ValueError(f"well {well!r} is not <row letters><column number> (e.g. B03); an OME-Zarr HCS "
                         "plate needs both")
    return m["row"], m["col"]


def plate_path(out: str | os.PathLike, plate: str) -> Path:
    """Where plate ``plate`` is written under ``out``: ``out/<plate>.ome.zarr``."""
    if not plate or "/" in plate or plate in (".", ".."):
        raise ValueError(f"plate name {plate!r} cannot be a folder name")
    return Path(out) / f"{plate}.ome.zarr"


def default_levels(shape: tuple[int, int], smallest: int = 256, most: int = 4) -> int:
    """Downsampled levels so that the smallest level's longer side stays >= ``smallest`` px."""
    return max(0, min(most, int(math.floor(math.log2(max(shape) / smallest))) if max(shape) >= smallest else 0))


def _json_value(value):
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value.item() if isinstance(value, np.generic) else value


def _field_meta(row: dict) -> dict:
    meta = {"field_id": row["field_id"], "plate": row["plate"], "well": row["well"], "site": int(row["site"])}
    meta.update({k: _json_value(row.get(k)) for k in FIELD_METADATA})
    return meta


def write_plate(index: pd.DataFrame, out: str | os.PathLike, *, labels: str | os.PathLike | None = None,
                levels: int | None = None, chunk: int = 1024, progress=None) -> dict:
    """Write the fields of a plate index (TIFF or OME-Zarr input) as OME-Zarr HCS plates under ``out``.

    Parameters
    ----------
    index
        Plate index; every plate becomes ``out/<plate>.ome.zarr`` (`plate_path`).
    labels
        A label store (``labels.zarr``) whose fields are written as NGFF labels beside the images;
        fields it lacks (failed segmentation) are listed in the result and written without labels.
    levels
        Downsampled pyramid levels (default: `default_levels` of the first field's shape).
    chunk
        Chunk edge in pixels (y and x); one channel per chunk.
    progress
        Optional ``callable(n_done, n_total)``.

    Returns
    -------
    ``{"plates": [paths], "fields": n, "written": n_written, "labels_written": n, "no_labels": [field_ids]}``.
    """
    from .._atomic import check_output

    index = index.reset_index(drop=True)
    channels = channels_of(index)
    plates = {p: plate_path(out, p) for p in index["plate"].unique()}
    wells = {w: split_well(w) for w in index["well"].unique()}
    for path in plates.values():
        check_output(path, "dir", FORMAT)
    report = progress or (lambda n, t: None)
    summary = {"plates": [str(p) for p in plates.values()], "fields": len(index), "written": 0,
               "labels_written": 0, "no_labels": []}
    done = 0
    report(done, len(index))
    for plate, path in plates.items():
        rows = index[index["plate"] == plate].to_dict("records")
        root = _open_plate(path, plate, rows, wells, channels)
        for row in rows:
            _write_field(root, path, row, wells[row["well"]], channels, labels, levels, chunk, summary)
            done += 1
            report(done, len(index))
        root.attrs["cellkit"] = {**root.attrs["cellkit"], "complete": True}
    return summary


def _open_plate(path: Path, plate: str, rows: list[dict], wells: dict, channels: list[str]):
    import ngio
    import zarr
    from ngio import ImageInWellPath

    old = dict(zarr.open_group(str(path), mode="r").attrs) if (path / "zarr.json").is_file() else {}
    if old.get("cellkit", {}).get("channels", channels) != channels:
        raise ValueError(f"{path} holds channels {old['cellkit']['channels']}, the plate index {channels}; "
                         "give a new output folder")
    images = [ImageInWellPath(row=wells[r["well"]][0], column=wells[r["well"]][1], path=str(int(r["site"])))
              for r in rows]
    if "ome" not in old:  # new plate (a rerun keeps the metadata written the first time)
        ngio.create_empty_plate(str(path), name=plate, images=images, ngff_version="0.5", overwrite=True)
    root = zarr.open_group(str(path), mode="a", zarr_format=3)
    listed = set(ngio.open_ome_zarr_plate(str(path), mode="r").images_paths(max_workers=1))
    missing = [f"{i.row}/{i.column}/{i.path}" for i in images if f"{i.row}/{i.column}/{i.path}" not in listed]
    if missing:
        raise ValueError(f"{path} was written for other fields (it lacks {missing[0]}); give a new output folder")
    root.attrs.update({"format": FORMAT, "cellkit": {"version": __version__, "channels": channels,
                                                      "complete": False}})
    return root


def _write_field(root, plate: Path, row: dict, well: tuple[str, str], channels, labels, levels, chunk,
                 summary) -> None:
    import ngio

    from .images import read_field

    key = f"{well[0]}/{well[1]}/{int(row['site'])}"
    path = str(plate / key)
    group = root.require_group(key)
    marks = dict(group.attrs.get("cellkit", {}))
    if not marks.get("complete"):
        image = read_field(row, channels)
        n_levels = default_levels(image.shape[1:]) if levels is None else levels
        ngio.create_ome_zarr_from_array(path, image, pixelsize=1.0, levels=n_levels + 1, axes_names="cyx",
                                        channels_meta=channels, ngff_version="0.5", overwrite=True, consolidation_mode="auto",
                                        chunks=(1, min(chunk, image.shape[1]), min(chunk, image.shape[2])))
        group = root[key]
        marks = {**_field_meta(row), "complete": True, "labels_complete": False, "levels": n_levels}
        group.attrs["cellkit"] = marks
        summary["written"] += 1
    if labels is not None and not marks.get("labels_complete"):
        if _write_field_labels(path, labels, row["field_id"]):
            group.attrs["cellkit"] = {**marks, "labels_complete": True}
            summary["labels_written"] += 1
        else:
            summary["no_labels"].append(row["field_id"])


def _write_field_labels(path: str, labels_path, field_id: str) -> bool:
    """Write ``labels/{nuclei,cells}`` of one field from a label store; False when it has none."""
    import ngio

    from .labels import field_complete, read_field_labels

    if not field_complete(labels_path, field_id):
        return False
    container = ngio.open_ome_zarr_container(path, mode="a")
    for name, data in zip(("nuclei", "cells"), read_field_labels(labels_path, field_id)):
        label = container.derive_label(name, dtype="uint32", overwrite=True)  # chunks as the image's
        label.set_array(data.astype(np.uint32))
        label.consolidate(mode="auto")  # the pyramid (nearest neighbour for labels)
    return True


def write_labels_in_place(index: pd.DataFrame, labels: str | os.PathLike, *, progress=None) -> dict:
    """Add ``labels/{nuclei,cells}`` to the fields of the OME-Zarr plates an index was built from.

    Every ``path_<channel>`` of ``index`` must be a plane reference (`cellkit.io.omezarr`). A label
    image of those names that cellkit did not write is never replaced (ValueError naming it).
    Resumable: a field's ``cellkit.labels_complete`` attribute is written last; a rerun from the
    same label store skips complete fields.

    Returns ``{"fields": n, "labels_written": n_written, "no_labels": [field_ids]}``.
    """
    import zarr

    from .omezarr import parse_ref

    index = index.reset_index(drop=True)
    column = f"path_{channels_of(index)[0]}"
    refs = [parse_ref(str(p)) for p in index[column]]
    if not all(refs):
        raise ValueError("labels can be written in place only into OME-Zarr plates: this plate index points "
                         f"to other files (e.g. {index.loc[refs.index(None), column]})")
    source = str(Path(labels).resolve())
    for (group, _), field_id in zip(refs, index["field_id"]):  # check everything before writing anything
        for name in ("nuclei", "cells"):
            label = Path(group) / "labels" / name
            if label.is_dir() and "cellkit" not in _attrs(label):
                raise ValueError(f"{label} exists and was not written by cellkit; it is not replaced "
                                 f"(field {field_id})")
    report = progress or (lambda n, t: None)
    summary = {"fields": len(index), "labels_written": 0, "no_labels": []}
    for done, ((group, _), field_id) in enumerate(zip(refs, index["field_id"]), start=1):
        node = zarr.open_group(group, mode="a")
        marks = dict(node.attrs.get("cellkit", {}))
        if not (marks.get("labels_complete") and marks.get("labels_source") == source):
            node.attrs["cellkit"] = {**marks, "labels_complete": False}
            if _write_field_labels(group, labels, field_id):
                for name in ("nuclei", "cells"):
                    zarr.open_group(f"{group}/labels/{name}", mode="a").attrs["cellkit"] = {"field_id": field_id,
                                                                                         "source": source}
                node.attrs["cellkit"] = {**marks, "labels_complete": True, "labels_source": source}
                summary["labels_written"] += 1
            else:
                summary["no_labels"].append(field_id)
        report(done, len(index))
    return summary


def _attrs(path: Path) -> dict:
    import zarr

    try:
        return dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # not a group: treated as foreign
        return {}
