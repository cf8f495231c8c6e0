"""Illumination (flat-field) correction per plate and channel, CellProfiler's "Regular" method.

CorrectIlluminationCalculate, "Regular / All images / Median or Gaussian smoothing": the mean of
every field of a plate (one channel), smoothed with a filter much larger than a cell so that only
the slowly varying illumination is left, then scaled to mean 1. CorrectIlluminationApply then
divides each field by it. A plate needs enough fields that cells average out in the mean (tens).

``aggregate="median"`` takes the per-pixel median over the fields instead of the mean: where cells
cover under half of the fields at a pixel, the median is background, so the estimate does not
follow where cells happen to lie (the mean does: fields with fewer cells near their edges make
the mean image fall off towards the edges faster than the illumination does).

Smoothing (sizes from the image geometry, not fitted to any data):

- ``"median"`` (default): median filter of size ``min(H, W) / 4`` px, computed on the aggregate
  image binned 4 x 4 (the filter of a full-size image that large is slow), then zoomed back (bilinear);
- ``"gaussian"``: Gaussian of sigma ``min(H, W) / 8`` px (``size`` to change it), reflecting at the edges.

Defaults (``aggregate="median", smoothing="median"``): the combination with the lowest error on
synthetic plates of seed 7 (benchmarks/illumination.py); the reported figures are from another seed.
CellProfiler's own Regular method is ``aggregate="mean"``.

Shapes: a flat field is (H, W) float32 with mean 1; `estimate_plate` returns (C, H, W).
BaSiCPy (Peng et al. 2017) is not used: it would add JAX and an optimiser stack (docs/images.md).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

SMOOTHING = ("gaussian", "median")
AGGREGATES = ("mean", "median")


def smooth_flatfield(mean_image: np.ndarray, *, smoothing: str = "median", size: float | None = None) -> np.ndarray:
    """Smooth a mean image (H, W) into a flat field (H, W) float32 with mean 1.

    ``size``: Gaussian sigma (default ``min(H, W) / 8``) or median window (default ``min(H, W) / 4``), px.
    """
    if smoothing not in SMOOTHING:
        raise ValueError(f"smoothing must be one of {SMOOTHING}, got {smoothing!r}")
    img = np.asarray(mean_image, np.float64)
    if img.ndim != 2:
        raise ValueError(f"a mean image is one 2-D plane, got shape {img.shape}")
    h, w = img.shape
    if smoothing == "gaussian":
        flat = ndi.gaussian_filter(img, size or min(h, w) / 8.0, mode="reflect")
    else:
        b = 4
        hb, wb = h // b, w // b
        binned = img[:hb * b, :wb * b].reshape(hb, b, wb, b).mean(axis=(1, 3))
        window = max(3, int(round((size or min(h, w) / 4.0) / b)) | 1)
        small = ndi.median_filter(binned, size=window, mode="reflect")
        flat = ndi.zoom(small, (h / hb, w / wb), order=1, mode="nearest", grid_mode=True)[:h, :w]
    mean = flat.mean()
    if not np.isfinite(mean) or mean <= 0:
        raise ValueError("the mean image has no positive signal: cannot estimate an illumination field")
    return np.maximum(flat / mean, 1e-3).astype(np.float32)


def mean_image(fields, channels, *, aggregate: str = "median", max_fields: int = 64, workers: int = 2) -> np.ndarray:
    """Per-pixel mean or median over fields of (C, H, W) images -> (C, H, W) float64.

    ``fields``: plate index rows (dict-like with ``path_<channel>``) or (C, H, W) arrays.
    ``"median"`` uses at most ``max_fields`` fields, evenly spaced (they are held in memory).
    """
    from .io.images import read_field

    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    fields = list(fields)
    if not fields:
        raise ValueError("no fields to average")
    if aggregate == "median" and len(fields) > max_fields:
        fields = [fields[i] for i in np.unique(np.linspace(0, len(fields) - 1, max_fields).round().astype(int))]

    def load(f):
        return np.asarray(f, np.float32) if isinstance(f, np.ndarray) else read_field(f, channels).astype(np.float32)

    total, stack = None, []
    with ThreadPoolExecutor(max(1, int(workers))) as pool:
        for img in pool.map(load, fields):
            if aggregate == "median":
                stack.append(img)
            else:
                total = img.astype(np.float64) if total is None else total + img
    if aggregate == "median":
        return np.median(np.stack(stack), axis=0).astype(np.float64)
    return total / len(fields)


def estimate_plate(fields, channels, *, aggregate: str = "median", smoothing: str = "median",
                   size: float | None = None, workers: int = 2) -> np.ndarray:
    """Flat fields (C, H, W) float32, each with mean 1, of one plate's fields (index rows or arrays)."""
    mean = mean_image(fields, channels, aggregate=aggregate, workers=workers)
    return np.stack([smooth_flatfield(m, smoothing=smoothing, size=size) for m in mean])


def estimate_illumination(index: pd.DataFrame, *, by: str = "plate", channels=None, aggregate: str = "median",
                          smoothing: str = "median", size: float | None = None, workers: int = 2,
                          progress=None) -> dict[str, np.ndarray]:
    """One flat-field stack (C, H, W) per ``by`` group (plate) of a plate index: ``{plate: field}``."""
    from .io.plate_index import channels_of

    channels = list(channels or channels_of(index))
    out = {}
    groups = list(index.groupby(by, sort=False))
    for done, (key, rows) in enumerate(groups, 1):
        out[str(key)] = estimate_plate([r for _, r in rows.iterrows()], channels, aggregate=aggregate,
                                       smoothing=smoothing, size=size, workers=workers)
        if progress:
            progress(done, len(groups))
    return out


def correct(images: np.ndarray, flat: np.ndarray, *, dtype=None) -> np.ndarray:
    """Divide a field (C, H, W) or (H, W) by its flat field; ``dtype`` (e.g. uint16) rounds and clips."""
    out = np.asarray(images, np.float32) / np.asarray(flat, np.float32)
    if dtype is None:
        return out
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(dtype)


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Median over pixels of ``|estimate / truth - 1|`` after scaling both to mean 1."""
    e = np.asarray(estimate, np.float64)
    t = np.asarray(truth, np.float64)
    return float(np.median(np.abs((e / e.mean()) / (t / t.mean()) - 1)))


def save_illumination(fields: dict[str, np.ndarray], channels, out: str | os.PathLike, *,
                      figure: bool = True, attrs: dict | None = None) -> Path:
    """Write ``<out>/<plate>.tif`` (C, H, W) float32 flat fields, ``illumination.json`` (channels,
    plates, parameters) and, with ``figure``, ``illumination.png`` (one panel per plate and channel)."""
    import json

    import tifffile

    from ._atomic import atomic_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = {}
    for plate, flat in fields.items():
        name = plate.replace("/", "_") + ".tif"
        with atomic_path(out / name) as tmp:
            tifffile.imwrite(tmp, np.asarray(flat, np.float32), metadata={"axes": "CYX"})
        names[plate] = name
    meta = {"channels": list(channels), "plates": names, **(attrs or {})}
    (out / "illumination.json").write_text(json.dumps(meta, indent=2, default=str))
    if figure:
        import matplotlib.pyplot as plt

        from .pl import illumination as plot

        fig = plot(fields, channels)
        fig.savefig(out / "illumination.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    return out


def load_illumination(folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read what `save_illumination` wrote: ``({plate: (C, H, W) float32}, channels)``."""
    import json

    import tifffile

    folder = Path(folder)
    meta = json.loads((folder / "illumination.json").read_text())
    return {p: tifffile.imread(folder / n).astype(np.float32) for p, n in meta["plates"].items()}, meta["channels"]


def correct_index(index: pd.DataFrame, fields: dict[str, np.ndarray], out: str | os.PathLike, *, by: str = "plate",
                  workers: int = 2, progress=None) -> pd.DataFrame:
    """Write every field divided by its plate's flat field (same dtype, rounded and clipped) as TIFFs
    under ``out/<plate>/`` and return the plate index pointing at them (metadata unchanged).

    A field already written with the same size is kept (an interrupted run resumes).
    """
    import tifffile

    from ._atomic import atomic_path
    from .io.images import read_field
    from .io.plate_index import PATH_PREFIX, channels_of

    channels = channels_of(index)
    missing = sorted(set(index[by].astype(str)) - set(fields))
    if missing:
        raise KeyError(f"no illumination field for {by} {missing[:5]}; estimate them first")
    out = Path(out)
    new = index.copy()

    def one(item):
        i, row = item
        flat = fields[str(row[by])]
        paths = {ch: out / str(row[by]).replace("/", "_") / f"{Path(row[PATH_PREFIX + ch]).stem}.tif"
                 for ch in channels}
        if all(p.exists() and p.stat().st_size > 0 for p in paths.values()):
            return i, paths
        images = read_field(row, channels)
        if flat.shape != images.shape:
            raise ValueError(f"field {row['field_id']} has shape {images.shape}, its flat field {flat.shape}")
        corrected = correct(images, flat, dtype=images.dtype)
        for c, ch in enumerate(channels):
            paths[ch].parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(paths[ch]) as tmp:
                tifffile.imwrite(tmp, corrected[c])
        return i, paths

    with ThreadPoolExecutor(max(1, int(workers))) as pool:
        for done, (i, paths) in enumerate(pool.map(one, index.iterrows()), 1):
            for ch, p in paths.items():
                new.at[i, PATH_PREFIX + ch] = str(p.resolve())
            if progress:
                progress(done, len(index))
    return new
