"""Robustness of every available encoder to imaging perturbations, on a synthetic plate and on real BBBC021 crops.

Synthetic: `cellkit.workflows.demo.run_demo` on a small plate set (2 plates, 6 MOAs, 512x640 fields) gives
cells.zarr and the demo's SimCLR and PCA models; BYOL, autoencoder, MAE and random-init are trained
beside them with the demo's short training settings. Real: the 2,999 BBBC021 crops (DMSO vs
cycloheximide) imported with `cellkit.io.import_bbbc021_crops`, the six methods trained briefly.
Handcrafted: CellProfiler-style features of each crop's cell (`cellkit.features.measure_crops` with
the store's masks; the BBBC021 crops come without masks, so there the whole crop is measured),
feature-selected and z-scored on the clean cells.
Each model's embeddings are measured under noise, blur, brightness, contrast and shift
(`cellkit.models.perturb.SEVERITIES`): cosine / L2 drift, kNN overlap (k=10) and well-level NSC change.

Usage: nice -n 10 python benchmarks/robustness.py [--out DIR] [--max-cells 1000] [--skip-real] [--skip-synthetic]
       [--methods simclr,byol,...] [--name robustness]
Writes benchmarks/results/<name>.json, and the tables and figures under DIR/<dataset>/report.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, save  # noqa: E402

from cellkit.datasets import SyntheticConfig  # noqa: E402
from cellkit.workflows.demo import DEMO_TRAINING, run_demo  # noqa: E402
from cellkit.io import import_bbbc021_crops  # noqa: E402
from cellkit.models import train  # noqa: E402
from cellkit.tl import robustness, robustness_summary as summary_table  # noqa: E402
from cellkit.workflows.robustness import write_report  # noqa: E402

# 2 plates of 512x640 fields (about 1,000 cells): smaller than the demo, enough cells per well for a well-level NSC.
PLATES = SyntheticConfig(n_batches=2, plates_per_batch=1, compounds_per_moa=2, n_moas=6, n_concentrations=1,
                         dmso_wells=4, sites=1, height=512, width=640, seed=7)
METHODS = ("simclr", "byol", "autoencoder", "mae", "pca", "random", "handcrafted")
REAL = Path(os.environ.get("CELLKIT_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
REAL = REAL / "bbbc021_singlecell_crops"


def train_missing(cells: Path, models_dir: Path, config: dict, methods=METHODS) -> dict[str, Path]:
    out = {}
    for method in methods:
        if method == "handcrafted":  # measured, not trained
            out[method] = method
            continue
        folder = models_dir / method
        if not (folder / "model.safetensors").exists():
            t = time.time()
            train(cells, folder, method=method, config=config, device="cpu")
            print(f"trained {method} in {time.time() - t:.0f} s")
        out[method] = folder
    return out


def measure(name: str, cells: Path, models: dict, out: Path, max_cells: int, seed: int) -> dict:
    t = time.time()
    result = robustness(cells, models, max_cells=max_cells, k=10, seed=seed)
    elapsed = time.time() - t
    write_report(result, out / "report")
    for metric in ("knn_overlap", "cosine_drift_mean", "delta_nsc"):
        print(f"\n{name}: {metric}\n" + summary_table(result, metric=metric).round(3).to_string())
    clean = result.table[result.table["perturbation"] == "clean"].set_index("model")["nsc"]
    return {"cells": str(cells), "n_cells": result.params["n_cells"], "seconds": round(elapsed, 1),
            "clean_well_nsc": clean.to_dict(), "table": result.table.round(4).to_dict(orient="records"),
            "report": str(out / "report")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=RESULTS / "robustness_work")
    parser.add_argument("--max-cells", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--name", default="robustness", help="results/<name>.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    methods = [m for m in args.methods.split(",") if m]
    results = {"settings": {"max_cells": args.max_cells, "seed": args.seed, "training": DEMO_TRAINING, "k": 10}}
    if not args.skip_synthetic:
        demo = args.out / "synthetic"
        t = time.time()
        run_demo(demo, PLATES)
        print(f"demo built in {time.time() - t:.0f} s")
        models = train_missing(demo / "cells.zarr", demo / "models", DEMO_TRAINING, methods)
        results["synthetic"] = measure("synthetic", demo / "cells.zarr", models, demo, args.max_cells, args.seed)
    if not args.skip_real and REAL.exists():
        real = args.out / "bbbc021"
        cells = real / "cells.zarr"
        if not cells.exists():
            import_bbbc021_crops(REAL / "bbbc021_crops_68x68_subset.npz", REAL / "index.csv", cells)
        models = train_missing(cells, real / "models", {**DEMO_TRAINING, "max_cells": 1024}, methods)
        results["bbbc021"] = measure("bbbc021", cells, models, real, args.max_cells, args.seed)
    save(args.name, results)


if __name__ == "__main__":
    main()
