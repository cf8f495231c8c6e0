"""The label store (``labels.zarr``, Zarr v3): nucleus and cell label images per field.

Layout: one group per field at ``<plate>/<well>/<site>`` (the field_id) holding ``nuclei`` and
``cells``, uint32 arrays of the field's shape (H, W), nucleus k inside cell k. The group's
``complete`` attribute is written last: a field without it is treated as absent (a writer
killed half-way leaves it so, and a rerun writes it again).

The group's ``objects`` attribute (`summarize_labels`, written with the arrays) holds what an
extraction plan needs: shape, nucleus labels and centroids, and the cell labels on the field
edge. Planning reads it instead of decoding the label images, so an extraction decodes each
field's labels once (when it cuts the field, where it checks them against the plan). Stores
written before it existed lack it; their plans decode the labels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import zarr

from .. import __version__

FORMAT = "cellkit.labels"
SUMMARY_VERSION = 1


def label_centroids(nuclei: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels present in a label image and their centroids.

    Parameters
    ----------
    nuclei
        (H, W) integer label image, 0 = background.

    Returns
    -------
    labels : (n,) int64, ascending
    centroids : (n, 2) float64, (y, x) in pixels (exact integer coordinate sums: bit-identical to
        ``np.bincount`` over ``np.nonzero``)
    """
    nuclei = np.asarray(nuclei)
    if nuclei.ndim != 2:
        raise ValueError(f"label image must be 2-D, got shape {nuclei.shape}")
    signed = np.issubdtype(nuclei.dtype, np.signedinteger)
    if nuclei.size and signed and int(nuclei.min()) < 0:
        raise ValueError("label images must not hold negative values")
    from ._label_moments import label_max, label_sums

    top = int(label_max(nuclei)) if nuclei.size and nuclei.dtype != bool else int(nuclei.max(initial=0))
    if top == 0:
        return np.zeros(0, np.int64), np.zeros((0, 2))
    if top <= 4 * nuclei.size:  # dense label values: one pass, indexed by value
        counts, sum_y, sum_x = label_sums(np.ascontiguousarray(nuclei), top + 1)
        counts[0] = 0
        labels = np.arange(top + 1)
    else:  # sparse label values: relabel to 0..k first
        ys, xs = np.nonzero(nuclei)
        labels, ids = np.unique(nuclei[ys, xs], return_inverse=True)
        counts = np.bincount(ids)
        sum_y, sum_x = np.bincount(ids, weights=ys), np.bincount(ids, weights=xs)
    keep = counts > 0
    centroids = np.stack([sum_y[keep], sum_x[keep]], axis=1) / counts[keep, None]
    return labels[keep].astype(np.int64), centroids


def edge_labels(cells: np.ndarray) -> np.ndarray:
    """(k,) int64 ascending: the non-zero labels on the outer rows and columns of an (H, W) label image."""
    edge = np.unique(np.concatenate([cells[0, :], cells[-1, :], cells[:, 0], cells[:, -1]])).astype(np.int64)
    return edge[edge > 0]


def summarize_labels(nuclei: np.ndarray, cells: np.ndarray) -> dict:
    """The ``objects`` attribute of a field: ``version``, ``shape`` [H, W], ``labels`` (nucleus labels,
    ascending), ``centroid_y`` / ``centroid_x`` (their centroids, float64; JSON keeps them exact) and
    ``edge_cells`` (cell labels on the field edge), as lists."""
    labels, centroids = label_centroids(nuclei)
    return {"version": SUMMARY_VERSION, "shape": [int(n) for n in nuclei.shape], "labels": labels.tolist(),
            "centroid_y": centroids[:, 0].tolist(), "centroid_x": centroids[:, 1].tolist(),
            "edge_cells": edge_labels(cells).tolist()}


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
    summary = summarize_labels(nuclei, cells)
    group.attrs.update({**(attrs or {}), "n_nuclei": len(summary["labels"]),
                        "n_cells": int(len(np.unique(cells)) - (cells.min() == 0)), "objects": summary})
    group.attrs["complete"] = True


def field_group(path: str | os.PathLike, field_id: str) -> zarr.Group | None:
    """The field's group when its labels were written completely, else None."""
    try:
        group = zarr.open_group(str(Path(path) / field_id), mode="r", zarr_format=3)  # label stores are v3: no v2 probing
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None
    return group if group.attrs.get("complete") is True else None


def field_attributes(path: str | os.PathLike, field_id: str) -> dict | None:
    """The field group's attributes (``objects``, ``n_nuclei``, ...) when its labels were written completely,
    else None. Read from the group's Zarr v3 metadata document (``<field_id>/zarr.json``) alone: no array
    is opened (an extraction plan reads only this)."""
    try:
        document = json.loads((Path(path) / field_id / "zarr.json").read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("zarr_format") != 3 or document.get("node_type") != "group":
        return None
    attrs = document.get("attributes") or {}
    return attrs if attrs.get("complete") is True else None


def field_complete(path: str | os.PathLike, field_id: str) -> bool:
    """True when the field's labels were written completely."""
    return field_group(path, field_id) is not None


def read_field_labels(path: str | os.PathLike, field_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one field's labels: (nuclei, cells), uint32 (H, W) each."""
    group = field_group(path, field_id)
    if group is None:
        raise KeyError(f"labels for field {field_id} are missing or incomplete in {path}")
    return group["nuclei"][:], group["cells"][:]
