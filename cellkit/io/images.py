"""Read field images from disk: TIFF with tifffile, other formats (PNG, 16-bit PNG included) with imageio."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import tifffile

from ..errors import reason
from ._columns import PATH_PREFIX, channels_of
from .omezarr import is_plane_ref, parse_ref, plane_exists, plane_shape, read_plane, read_planes


class ImageReadError(OSError):
    """An image file is missing, corrupt or not a 2-D single-channel image."""


def _is_tiff(path) -> bool:
    return str(path).lower().endswith((".tif", ".tiff"))


def image_shape(path: str) -> tuple[int, ...]:
    """Shape of the first page of a TIFF, read from its header only (or of an OME-Zarr plane)."""
    if is_plane_ref(path):
        return _zarr_plane(plane_shape, path)
    if not _is_tiff(path):
        import imageio.v3 as iio

        return tuple(s for s in iio.improps(path).shape if s != 1) or (1,)
    with tifffile.TiffFile(path) as tif:
        return tuple(tif.pages[0].shape)


def read_image(path: str) -> np.ndarray:
    """Read one 2-D image (TIFF; PNG and other formats through imageio), shape (H, W), dtype as stored.
    Raises `ImageReadError` with the path.

    ``path`` may also be a plane reference into an OME-Zarr field (`cellkit.io.omezarr`).
    """
    if is_plane_ref(path):
        return _zarr_plane(read_plane, path)
    try:
        if _is_tiff(path):
            image = tifffile.imread(path)
        else:
            import imageio.v3 as iio

            image = iio.imread(path)
    except Exception as err:  # corrupt, truncated, not a TIFF, missing
        raise ImageReadError(f"cannot read image {path}: {reason(err)}") from err
    image = np.squeeze(image)
    if image.ndim != 2:
        raise ImageReadError(f"image {path} has shape {image.shape}; expected one 2-D plane")
    return image


def image_exists(path: str) -> bool:
    """True when the image file (or the OME-Zarr field group of a plane reference) exists."""
    return plane_exists(path) if is_plane_ref(path) else os.path.isfile(path)


def _zarr_plane(read, path: str):
    try:
        return read(path)
    except Exception as err:  # missing group, damaged chunk, not 2-D
        raise ImageReadError(f"cannot read image {path}: {reason(err)}") from err


def read_field(row: pd.Series | dict, channels: list[str] | None = None) -> np.ndarray:
    """Read all channels of one field (a plate index row).

    Returns
    -------
    ndarray, shape (C, H, W), the stored dtype (uint16 for BBBC021), channels in ``channels``
    order (default: the row's ``path_<channel>`` order).
    """
    row = dict(row)
    if channels is None:
        channels = [k[len(PATH_PREFIX):] for k in row if str(k).startswith(PATH_PREFIX)]
    refs = [parse_ref(str(row[PATH_PREFIX + ch])) for ch in channels]
    if refs and all(refs) and len({g for g, _ in refs}) == 1:  # one OME-Zarr field: read its array once
        return _zarr_plane(lambda _: read_planes(refs[0][0], [c for _, c in refs]), row[PATH_PREFIX + channels[0]])
    planes = [read_image(row[PATH_PREFIX + ch]) for ch in channels]
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        raise ImageReadError(f"field {row.get('field_id')}: channels of different shapes {[p.shape for p in planes]}")
    return np.stack(planes)


INTENSITY_RULE = ("stored as uint16 counts: uint16 as is (12-bit data too); uint8 x 257 (255 -> 65535); "
                  "other integers as is when within [0, 65535]; float in [0, 1] x 65535 (rounded), float with "
                  "larger values as counts (rounded, within [0, 65535]). CellProfiler's 0-1 intensity scale is "
                  "then counts / 65535, i.e. value / 255 for uint8 and value for float in [0, 1].")


def to_uint16(image: np.ndarray, name: str = "image") -> tuple[np.ndarray, float]:
    """Convert pixels of any supported dtype to uint16 counts (see `INTENSITY_RULE`).

    Returns ``(counts, scale)`` with ``counts = round(image * scale)``, uint16, same shape.
    Raises ValueError for NaN/inf pixels, negative values, values over 65535, or non-numeric
    dtypes (bool included), naming ``name``.
    """
    image = np.asarray(image)
    if image.dtype == np.uint16:
        return image, 1.0
    if image.dtype == np.uint8:
        return image.astype(np.uint16) * np.uint16(257), 257.0
    if image.dtype == np.bool_ or not (np.issubdtype(image.dtype, np.integer)
                                       or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"{name}: unsupported pixel type {image.dtype}; expected uint8, uint16, other "
                         "integers or float")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        n = int((~np.isfinite(image)).sum())
        raise ValueError(f"{name}: {n} NaN or infinite pixel(s); fix or mask them before running cellkit")
    low, high = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if low < 0 or high > 65535:
        raise ValueError(f"{name}: {image.dtype} values span [{low:g}, {high:g}]; cellkit needs values in "
                         "[0, 65535] (or [0, 1] for float images): rescale the images")
    scale = 65535.0 if np.issubdtype(image.dtype, np.floating) and high <= 1.0 else 1.0
    return np.rint(image.astype(np.float64) * scale).astype(np.uint16), scale


def read_crops(path: str, n_channels: int) -> np.ndarray:
    """Single-cell crops from a ``.npy`` or TIFF file, as (N, C, S, S) float32 (``C = n_channels``).

    Accepts (C, S, S) and (N, C, S, S) (the cells.zarr layout), channels-last (S, S, C) and
    (N, S, S, C) where the layout is unambiguous, and (S, S) when ``n_channels`` is 1. The
    channels must be in the order of the store the embeddings came from. Raises `ImageReadError`.
    """
    try:
        crops = np.load(path, allow_pickle=False) if str(path).endswith(".npy") else tifffile.imread(path)
    except Exception as err:
        raise ImageReadError(f"cannot read crops {path}: {reason(err)}") from err
    crops = np.asarray(crops)
    if not (np.issubdtype(crops.dtype, np.integer) or np.issubdtype(crops.dtype, np.floating)):
        raise ImageReadError(f"crops {path} have dtype {crops.dtype}; expected integer or float pixels")
    if crops.ndim == 2 and n_channels == 1:
        crops = crops[None]
    if crops.ndim == 3:
        crops = crops[None]
    if crops.ndim == 4 and crops.shape[1] != n_channels and crops.shape[3] == n_channels:
        crops = np.moveaxis(crops, 3, 1)
    if crops.ndim != 4 or crops.shape[1] != n_channels or crops.shape[2] != crops.shape[3]:
        raise ImageReadError(f"crops {path} have shape {np.shape(crops)}; expected (C, S, S) or (N, C, S, S) "
                             f"square crops with C = {n_channels} channels")
    return crops.astype(np.float32)


__all__ = ["ImageReadError", "INTENSITY_RULE", "image_exists", "image_shape", "read_image", "read_field",
           "read_crops", "channels_of", "to_uint16"]
