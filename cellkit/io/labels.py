"""The label store (``labels.zarr``, Zarr v3): nucleus and cell label images per field.

Layout: one group per field at ``<plate>/<well>/<site>`` (the field_id) holding ``nuclei`` and
``cells``, uint32 arrays of the field's shape (H, W), nucleus k inside cell k. The group's
``complete`` attribute is written last: a field without it is treated as absent (a writer
killed half-way leaves it so, and a rerun writes it again).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr

from .. import __version__

FORMAT = "cellkit.labels"


def open_labels(path: str | os.PathLike, mode: str = "r") -> zarr.Group:
    """Open (``mode="a"``: create if missing) a label store."""
    path = Path(path)
    if mode == "r" and not path.exists():
        raise FileNotFoundError(f"no label store at {path}")
    if mode != "r":
        from .._atomic import check_output

        check_output(path, "dir", FORMAT)
    root = zarr.open_group(str(path), mode=mode, zarr_format=3)
    if mode != "r" and "format" not in root.attrs:
        root.attrs.update({"format": FORMAT, "cellkit_version": __version__})
    if root.attrs.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cellkit label store")
    return root


def write_field_labels(path: str | os.PathLike, field_id: str, nuclei: np.ndarray, cells: np.ndarray,
                       attrs: dict | None = None) -> None:
    """Write one field's labels, then mark the field complete. Overwrites a half-written field."""
    nuclei, cells = np.asarray(nuclei), np.asarray(cells)
    if nuclei.shape != cells.shape or nuclei.ndim != 2:
        raise ValueError(f"{field_id}: nuclei {nuclei.shape} and cells {cells.shape} must be one 2-D shape")
    root = open_labels(path, mode="a")
    group = root.require_group(field_id)
    group.attrs["complete"] = False
    compressors = zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
    for name, data in (("nuclei", nuclei), ("cells", cells)):
        group.create_array(name, data=data.astype(np.uint32), chunks=data.shape, compressors=compressors,
                           overwrite=True)
    group.attrs.update({**(attrs or {}), "n_nuclei": int(len(np.unique(nuclei)) - (nuclei.min() == 0)),
                        "n_cells": int(len(np.unique(cells)) - (cells.min() == 0))})
    group.attrs["complete"] = True


def field_complete(path: str | os.PathLike, field_id: str) -> bool:
    """True when the field's labels were written completely."""
    try:
        group = zarr.open_group(str(Path(path) / field_id), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False
    return group.attrs.get("complete") is True


def read_field_labels(path: str | os.PathLike, field_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one field's labels: (nuclei, cells), uint32 (H, W) each."""
    if not field_complete(path, field_id):
        raise KeyError(f"labels for field {field_id} are missing or incomplete in {path}")
    group = zarr.open_group(str(Path(path) / field_id), mode="r")
    return group["nuclei"][:], group["cells"][:]
