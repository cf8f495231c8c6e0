"""OME-Zarr HCS plates: conversion speed and size, field reads, and identity with the TIFF plate.

1. A synthetic plate at BBBC021's field size (1024 x 1280, 3 channels, uint16; `SyntheticConfig`
   below, 1 plate, 12 fields) is converted with `cellkit convert` defaults (chunks 1024, pyramid by
   `default_levels`): seconds per field, bytes on disk vs the TIFFs, seconds to index the plate,
   seconds per `read_field` from the TIFFs vs from the plate (median of all fields, second pass).
2. Identity: every field's pixels, and the classical segmentation of every field, are compared
   between the TIFF index and the OME-Zarr index (counts of fields that differ; target 0).
3. The one real BBBC021 field in ../shared/data/real/bbbc021_images (DAPI only) as a one-channel
   plate: pixels and classical nuclei identical (skipped when the folder is absent).

Nothing is tuned here: the settings are the command defaults.

Usage: OMP_NUM_THREADS=1 nice -n 10 python benchmarks/omezarr.py [--fields 12] -> results/omezarr.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

from cellkit.datasets import SyntheticConfig, synthetic_index, write_synthetic_plate  # noqa: E402
from cellkit.io import from_omezarr, read_field  # noqa: E402
from cellkit.io.omezarr_write import default_levels, write_plate  # noqa: E402
from cellkit.segment import get_segmenter  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "bbbc021_images"


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _read_seconds(index: pd.DataFrame) -> float:
    times = []
    for row in index.to_dict("records"):
        start = time.perf_counter()
        read_field(row)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _same_segmentation(a: pd.DataFrame, b: pd.DataFrame, segmenter) -> int:
    """Fields whose classical labels differ between two indexes of the same plate."""
    channels = [c[len("path_"):] for c in a.columns if c.startswith("path_")]
    differ = 0
    for ra, rb in zip(a.to_dict("records"), b.to_dict("records")):
        sa = segmenter.segment_field(read_field(ra), channels)
        sb = segmenter.segment_field(read_field(rb), channels)
        differ += not (np.array_equal(sa.nuclei, sb.nuclei) and np.array_equal(sa.cells, sb.cells))
    return differ


def synthetic_part(work: Path, n_fields: int) -> dict:
    config = SyntheticConfig(n_batches=1, plates_per_batch=1, compounds_per_moa=1, n_moas=max(1, n_fields // 2 - 1),
                             n_concentrations=1, dmso_wells=1, sites=2, height=1024, width=1280, seed=0)
    write_synthetic_plate(work / "tiff", config)
    index = synthetic_index(work / "tiff").head(n_fields)
    start = time.perf_counter()
    write_plate(index, work / "zarr")
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    zindex = from_omezarr(work / "zarr")
    index_s = time.perf_counter() - start
    pixels_differ = sum(not np.array_equal(read_field(a), read_field(b))
                        for a, b in zip(index.to_dict("records"), zindex.to_dict("records")))
    _read_seconds(index), _read_seconds(zindex)  # warm the page cache for both
    tiff_bytes = sum(Path(p).stat().st_size for c in index if c.startswith("path_") for p in index[c])
    segmenter = get_segmenter("classical")
    return {"fields": len(index), "field_shape": [3, config.height, config.width], "levels": default_levels((1024, 1280)),
            "convert_seconds_per_field": round(convert_s / len(index), 3),
            "index_seconds": round(index_s, 3),
            "read_field_seconds_tiff": round(_read_seconds(index), 4),
            "read_field_seconds_omezarr": round(_read_seconds(zindex), 4),
            "tiff_bytes": tiff_bytes, "omezarr_bytes": _size(work / "zarr"),
            "fields_with_different_pixels": int(pixels_differ),
            "fields_with_different_classical_labels": _same_segmentation(index, zindex, segmenter)}


def real_part(work: Path) -> dict:
    files = sorted(REAL.glob("*.tif")) if REAL.exists() else []
    if not files:
        return {"skipped": f"no real BBBC021 image in {REAL}"}
    index = pd.DataFrame({"plate": ["Week1_150607"], "well": ["C02"], "site": [3], "batch": ["Week1"],
                          "compound": [None], "concentration": [np.nan], "moa": [None],
                          "path_DNA": [str(files[0])]})
    from cellkit.io.plate_index import finalize_index

    index = finalize_index(index)
    write_plate(index, work / "real")
    zindex = from_omezarr(work / "real")
    a, b = read_field(index.iloc[0]), read_field(zindex.iloc[0])
    segmenter = get_segmenter("classical")
    na = segmenter.segment_field(a, ["DNA"]).nuclei
    nb = segmenter.segment_field(b, ["DNA"]).nuclei
    return {"file": files[0].name, "shape": list(a.shape), "dtype": str(a.dtype),
            "pixels_identical": bool(np.array_equal(a, b)), "nuclei": int(na.max()),
            "classical_labels_identical": bool(np.array_equal(na, nb)),
            "tiff_bytes": files[0].stat().st_size, "omezarr_bytes": _size(work / "real")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = {"synthetic": synthetic_part(work, args.fields), "real": real_part(work)}
    import ngio

    result["versions"] = {"ngio": ngio.__version__}
    save("omezarr", result)


if __name__ == "__main__":
    main()
