"""MOA accuracy (NSC / NSCB) of well profiles from each embedding vs handcrafted morphology, synthetic plates.

Needs the extraction and features stages (cellkit.extract, cellkit.features) and the profile
tools (cellkit.tl, cellkit.workflows.profiles). Steps: a synthetic plate set (the demo's layout: 2 batches x 2
plates, 12 MOAs x 2 compounds x 2 concentrations, 4 DMSO wells per plate), ground-truth labels,
extraction into cells.zarr + cells.h5ad (64x64 crops, morphology in X), then SimCLR, BYOL,
autoencoder, PCA and random-init trained on the crops and embedded into obsm. Each representation
goes through the same plain pipeline: well mean -> per-plate z-score against DMSO wells ->
treatment mean -> cosine 1-NN NSC / NSCB (`ck.tl.moa_accuracy`).

Usage: nice -n 10 python benchmarks/ssl_synthetic_nsc.py [--epochs 3] [--width 32] [--out DIR]
Models already finished in DIR are reused. Writes benchmarks/results/ssl_synthetic_nsc.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import torch

from cellkit import pp, tl
from cellkit.datasets import SyntheticConfig, synthetic_index, write_ground_truth_labels, write_synthetic_plate
from cellkit.models import EMBEDDING_KEYS, embed_h5ad, train
from cellkit.workflows.profiles import prepare_profiles

METHODS = ("random", "pca", "simclr", "byol", "autoencoder")


def build_cells(out: Path, config: SyntheticConfig, log=print) -> tuple[Path, Path]:
    from cellkit.extract import extract_cells
    from cellkit.features import measure_field

    plate, labels, cells = out / "plate", out / "labels.zarr", out / "cells.zarr"
    if not (plate / "synthetic.json").exists():
        write_synthetic_plate(plate, config)
    index = synthetic_index(plate)
    if not labels.exists():
        write_ground_truth_labels(plate, labels)
    h5ad = out / "cells.h5ad"
    if not h5ad.exists():
        result = extract_cells(index, labels, cells, size=64, border="drop", measure=measure_field, workers=2,
                               adata=h5ad)
        h5ad = Path(result.adata or h5ad)
    return cells, h5ad


def score(h5ad: Path, use_rep: str | None) -> dict:
    """Plain pipeline on one representation; NSC and NSCB of treatment profiles."""
    wells = tl.aggregate(h5ad, by=("plate", "well"), use_rep=use_rep)
    if use_rep is None:  # morphology: drop features with NaN or no variance, as the demo does
        pp.feature_select(wells, operations=("nan", "variance"), nan_cutoff=0.0)
    treatments = prepare_profiles(wells, normalize="zscore")
    result = tl.moa_accuracy(treatments, control="compound == 'DMSO'", key_added=None)
    return {"NSC": result.nsc, "NSCB": result.nscb, "n_NSC": result.n_nsc, "n_NSCB": result.n_nscb,
            "n_features": int(wells.n_vars), "n_wells": int(wells.n_obs)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/cellkit_ssl_synthetic"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = SyntheticConfig()
    start = time.perf_counter()
    cells, h5ad = build_cells(args.out, config)
    print(f"cells ready in {time.perf_counter() - start:.0f}s: {ad.read_h5ad(h5ad, backed='r').n_obs} cells", flush=True)
    results = {"synthetic": vars(config), "settings": vars(args) | {"out": str(args.out)}, "scores": {}}
    present = set(ad.read_h5ad(h5ad).obsm)
    for method in args.methods.split(","):
        model_dir = args.out / "models" / method
        config_file = model_dir / "config.json"
        if not (config_file.exists() and json.loads(config_file.read_text()).get("complete")):
            start = time.perf_counter()
            train(cells, model_dir, method=method, overwrite=True,
                  config={"epochs": args.epochs, "width": args.width, "num_workers": 1, "seed": 0})
            print(f"{method}: trained in {time.perf_counter() - start:.0f}s", flush=True)
            present.discard(EMBEDDING_KEYS[method])
        if EMBEDDING_KEYS[method] not in present:
            embed_h5ad(cells, model_dir, h5ad)
        saved = json.loads(config_file.read_text())
        results["scores"][method] = {**score(h5ad, EMBEDDING_KEYS[method]), "epochs": saved["epochs_done"],
                                     "train_seconds": sum(h["seconds"] for h in saved["history"])}
    results["scores"]["morphology"] = score(h5ad, None)
    print(f"\n{'representation':<16}{'features':>9}{'NSC':>8}{'NSCB':>8}")
    for name, s in results["scores"].items():
        nscb = f"{s['NSCB']:.3f}" if s["NSCB"] is not None else "-"
        print(f"{name:<16}{s['n_features']:>9}{s['NSC']:>8.3f}{nscb:>8}   ({s['n_NSC']} / {s['n_NSCB']} treatments)")
    dest = Path(__file__).resolve().parent / "results" / "ssl_synthetic_nsc.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(results, indent=2, default=str))
    print(f"written {dest}")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # cellkit's log (epochs, extraction)
    main()
