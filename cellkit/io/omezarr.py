"""Read OME-Zarr (OME-NGFF) HCS plates: their metadata and fields, lazily (the plate index: `omezarr_index`).

Metadata (plate, wells, fields, ``multiscales`` axes and datasets, ``omero`` channel labels) is read
with ngio (`ngio.open_ome_zarr_plate`, `ngio.open_ome_zarr_container`), which validates NGFF 0.4
(Zarr v2) and 0.5 (Zarr v3); pixels are read with zarr from the full-resolution dataset.
A plate index row points into the plate: ``path_<channel>`` is a *plane reference*
``<plate>/<row>/<column>/<field>#c=<channel index>`` (the field's image group, then the channel's
position on its ``c`` axis). `read_plane` reads that plane, shape (H, W), from the full-resolution
dataset only when a stage asks for it: no conversion step, nothing loaded at indexing time.

Plate index values: ``plate`` = the plate metadata's ``name`` (else the folder name without
``.ome.zarr``); ``well`` = row name + column name (``B`` + ``03`` -> ``B03``); ``site`` = the field's
path when it is a number, else its 1-based position in the well; ``batch``, ``compound``,
``concentration`` and ``moa`` from the field's ``cellkit`` attributes (written by ``cellkit convert``)
when present, else missing (join a metadata table to add them).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np


REF = re.compile(r"^(?P<group>.+)#c=(?P<c>\d+)\Z")
FORMAT = "cellkit.ome-zarr"  # root ``format`` attribute of plates written by cellkit
FIELD_METADATA = ("batch", "compound", "concentration", "moa")


def plane_ref(group: str | os.PathLike, channel: int) -> str:
    """The plate index path of channel ``channel`` of the field image group ``group``."""
    return f"{os.fspath(group)}#c={int(channel)}"


def parse_ref(path: str) -> tuple[str, int] | None:
    """``(field group, channel index)`` for a plane reference, None for an ordinary file path."""
    m = REF.match(str(path))
    return (m["group"], int(m["c"])) if m else None


def is_plane_ref(path) -> bool:
    """True when ``path`` is a plane reference into an OME-Zarr field (see the module docstring)."""
    return parse_ref(str(path)) is not None


@functools.lru_cache(maxsize=4096)
def _image_meta(group: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """``(full-resolution array path, axis names, channel labels)`` of a field image group."""
    import ngio

    if not os.path.isdir(group):
        raise FileNotFoundError(f"no OME-Zarr image group at {group}")
    try:
        container = ngio.open_ome_zarr_container(group, mode="r")
        image = container.get_image()
        labels = tuple(str(c) for c in container.channel_labels)
    except Exception as err:  # noqa: BLE001 - ngio's validation errors name what is wrong
        raise ValueError(f"{group} is not a readable OME-Zarr image: {_one_line(err)}") from err
    return os.path.join(group, container.level_paths[0]), tuple(image.axes), labels


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:200]


def _open_array(group: str):
    import zarr

    array_path, axes, _ = _image_meta(group)
    array = zarr.open_array(array_path, mode="r")
    if len(axes) != array.ndim:
        raise ValueError(f"{array_path}: {array.ndim} dimensions but axes {list(axes)}")
    return array, axes


def _plane_index(array, axes, c: int, where: str) -> tuple:
    index = []
    for name, size in zip(axes, array.shape):
        if name == "c":
            if c >= size:
                raise ValueError(f"{where}: channel index {c} but the image has {size} channel(s)")
            index.append(c)
        elif name in ("y", "x"):
            index.append(slice(None))
        elif size == 1:
            index.append(0)
        else:
            raise ValueError(f"{where}: axis {name!r} has {size} planes; cellkit reads 2-D fields "
                             f"(project or select one {name} plane first)")
    if "c" not in axes and c != 0:
        raise ValueError(f"{where}: channel index {c} but the image has no channel axis")
    return tuple(index)


def read_plane(path: str) -> np.ndarray:
    """Read one channel plane of an OME-Zarr field, shape (H, W), dtype as stored (full resolution)."""
    group, c = parse_ref(path)
    array, axes = _open_array(group)
    return np.asarray(array[_plane_index(array, axes, c, path)])


def read_planes(group: str, channels: list[int]) -> np.ndarray:
    """Several channel planes of one OME-Zarr field, opened once: (len(channels), H, W), dtype as stored."""
    array, axes = _open_array(group)
    index = [_plane_index(array, axes, c, f"{group}#c={c}") for c in channels]
    if "c" in axes:
        pos = axes.index("c")
        whole = list(index[0])
        whole[pos] = slice(None)
        data = np.asarray(array[tuple(whole)])  # every channel in one read, then picked in order
        return np.take(data, channels, axis=pos)
    return np.stack([np.asarray(array[i]) for i in index])


def plane_shape(path: str) -> tuple[int, int]:
    """(H, W) of a plane reference, from the array metadata only."""
    group, c = parse_ref(path)
    array, axes = _open_array(group)
    _plane_index(array, axes, c, path)
    return tuple(s for n, s in zip(axes, array.shape) if n in ("y", "x"))


def plane_exists(path: str) -> bool:
    """True when the field image group of a plane reference exists (metadata not read)."""
    group, _ = parse_ref(path)
    return os.path.isdir(group)


# ----------------------------------------------------------------------------------------------- index

def _ome_attrs(path: str | os.PathLike) -> dict:
    """NGFF attributes of a Zarr group (under ``ome`` in Zarr v3), {} when there is no group."""
    import zarr

    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # not a group
        return {}
    return attrs.get("ome", attrs)


def is_omezarr_plate(path: str | os.PathLike) -> bool:
    """True when ``path`` is a Zarr group holding OME-NGFF HCS ``plate`` metadata."""
    path = Path(path)
    if not (path / "zarr.json").is_file() and not (path / ".zattrs").is_file():
        return False
    return "plate" in _ome_attrs(path)
