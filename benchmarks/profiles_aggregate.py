"""Aggregation of 1 million cells x 500 features to wells, out of core: time and peak memory.

Writes a synthetic cells.h5ad (float32 X, 1,000,000 x 500 = 2 GB; cells of a well contiguous,
as extraction writes them) once, then runs ``ck.tl.aggregate(path)`` (backed, chunked) in a
fresh subprocess per case and records wall time and the child's peak resident memory.

    nice -n 10 python benchmarks/profiles_aggregate.py [--cells 1000000] [--features 500]

Prints and writes benchmarks/results/profiles_aggregate.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHILD = """
import resource, sys, time, json
import cellkit as ck
t = time.perf_counter()
if sys.argv[2] == "open":  # baseline: imports + the backed file's obs (1M rows of strings) in memory
    import anndata as ad
    backed = ad.read_h5ad(sys.argv[1], backed="r")
    n_wells, n_cells, check = 0, backed.n_obs, 0.0
else:
    wells = ck.tl.aggregate(sys.argv[1], func=sys.argv[2], chunk_size=int(sys.argv[3]))
    n_wells, n_cells, check = wells.n_obs, int(wells.obs["n_cells"].sum()), float(wells.X[0, 0])
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "n_wells": n_wells, "n_cells": n_cells, "check": check}))
"""


def write_cells_h5ad(path: Path, n_cells: int, n_features: int, n_wells: int, seed: int = 0, chunk: int = 50_000):
    """A cells.h5ad written chunk by chunk (never the whole matrix in memory)."""
    import anndata as ad
    import h5py
    import pandas as pd

    well_of = np.sort(np.random.default_rng(seed).integers(0, n_wells, n_cells))
    plates = np.array([f"P{w // 60:02d}" for w in range(n_wells)])
    wells = np.array([f"{'BCDEFG'[(w % 60) // 10]}{w % 10 + 2:02d}" for w in range(n_wells)])
    obs = pd.DataFrame({"plate": plates[well_of], "well": wells[well_of],
                        "compound": np.where(np.arange(n_wells) % 10 == 0, "DMSO", "x")[well_of]},
                       index=pd.RangeIndex(n_cells).astype(str))
    var = pd.DataFrame(index=[f"f{j}" for j in range(n_features)])
    ad.AnnData(obs=obs, var=var).write_h5ad(path)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "r+") as f:
        X = f.create_dataset("X", shape=(n_cells, n_features), dtype="float32", chunks=(4096, n_features))
        X.attrs["encoding-type"] = "array"
        X.attrs["encoding-version"] = "0.2.0"
        for start in range(0, n_cells, chunk):
            stop = min(start + chunk, n_cells)
            X[start:stop] = rng.normal(size=(stop - start, n_features)).astype(np.float32) + well_of[start:stop, None] % 7


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=500)
    parser.add_argument("--wells", type=int, default=3_000)
    parser.add_argument("--chunk-size", type=int, default=25_000)
    parser.add_argument("--work", type=Path, default=HERE / "results" / "aggregate_work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"cells_{args.cells}x{args.features}.h5ad"
    if not path.exists():
        t = time.perf_counter()
        write_cells_h5ad(path, args.cells, args.features, args.wells)
        print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s")
    results = {"n_cells": args.cells, "n_features": args.features, "n_wells": args.wells,
               "matrix_gb": args.cells * args.features * 4 / 1e9, "chunk_size": args.chunk_size,
               "python": platform.python_version(), "machine": platform.machine(), "cases": {}}
    for func in ("open", "mean", "median"):
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), func, str(args.chunk_size)],
                             capture_output=True, text=True, check=True)
        case = json.loads(out.stdout.strip().splitlines()[-1])
        results["cases"][func] = case
        print(f"aggregate {func:>6}: {case['wall_s']:.1f} s, peak RSS {case['peak_rss_mb']:.0f} MB, "
              f"{case['n_wells']} wells from {case['n_cells']} cells")
    from importlib.metadata import version

    results["versions"] = {name: version(name) for name in ("cellkit", "anndata", "h5py", "scipy")}
    dest = HERE / "results" / "profiles_aggregate.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=2))
    print(f"-> {dest}")


if __name__ == "__main__":
    main()
