"""Real BBBC021 crops: does each representation separate cycloheximide from DMSO, and order its doses?

Imports ``shared/data/real/bbbc021_singlecell_crops`` (2,999 crops, 68 px, 6 Week4 plates: DMSO in
B02 of each plate; cycloheximide 5 uM in 2 wells, 15 and 50 uM in 3 wells each) into a cells.zarr and
compares four representations of the whole crop (the source gives no masks):

- ``morphology``: `cellkit.features.measure_crops` with the whole crop as the cell (and nucleus);
- ``pixel_pca``: PCA of the crop pixels;
- ``random``: the SSL encoder at its seeded initialisation (same options as the SSL row);
- ``simclr`` (and any other ``--methods``): trained with ``--preset`` and ``--config`` (the recipe chosen on
  synthetic plates, `docs/models.md`; nothing here is tuned on these crops), for ``--epochs`` or, with
  ``--budget-minutes``, for that many CPU-minutes planned like `benchmarks/ssl_moa.py` (``train_within``).

Every ResNet encoder (random-init, SimCLR, BYOL, weak) is embedded with its own ``embed_pool`` and with the other
one, as a second row ``<method>-last`` / ``<method>-stages`` (``--one-pool``: its own only).

Scores, for every representation:

- ``knn_bal_acc``: leave-one-plate-out cosine 15-NN vote DMSO vs cycloheximide at cell level, balanced
  accuracy (`benchmarks/ssl_bbbc021.py`'s ``cell_knn_lopo``);
- dose order: cells z-scored per plate against that plate's DMSO cells (`ck.pp.normalize`), well means; the
  distance of each treated well from its plate's DMSO cells is the bias-corrected squared Euclidean distance
  ``|m_w - m_dmso|^2 - tr(S_w)/n_w - tr(S_dmso)/n_dmso`` (the 5 uM wells hold 60 cells against 240, so the
  plain distance would favour them by noise alone); ``spearman_wells`` = Spearman of dose vs distance over
  the 8 treated wells, ``spearman_dose_means`` = Spearman over the 3 dose means (1.0 = 5 < 15 < 50 uM).
  The plain distances are recorded too.

Usage: OMP_NUM_THREADS=1 python benchmarks/ssl_bbbc021_dose.py [--epochs 30 | --budget-minutes M] [--threads 1]
[--out DIR]
Writes ``benchmarks/results/ssl_bbbc021_dose.json`` (or ``--json``). Finished models in ``--out`` are reused.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

import cellkit
from cellkit import pp
from cellkit.io import import_bbbc021_crops
from cellkit.io.cells import open_cells, read_cells
from cellkit.models import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ssl_bbbc021 import REAL, cell_knn_lopo  # noqa: E402
from ssl_moa import embed_model, embedded_weights, row_method, train_within  # noqa: E402

# The SSL recipe (chosen on synthetic plates, seed 3 of the demo's layout; see docs/models.md).
RECIPE = {"preset": "cpu-small", "seed": 0, "num_workers": 0}


def real_crops(out: Path) -> tuple[Path, Path]:
    """The real crops as ``out``/cells.zarr and cells.h5ad (imported from the source files when missing)."""
    out.mkdir(parents=True, exist_ok=True)
    cells, h5ad = out / "cells.zarr", out / "cells.h5ad"
    if not cells.exists():
        import_bbbc021_crops(REAL / "bbbc021_crops_68x68_subset.npz", REAL / "index.csv", cells, h5ad)
    return cells, h5ad


def whole_crop_morphology(cells: Path, out: Path) -> pd.DataFrame:
    """`measure_crops` of every crop with the whole crop as cell and nucleus (cached in ``out``)."""
    from cellkit.features import measure_crops

    if out.exists():
        return pd.read_parquet(out)
    images, masks, obs = read_cells(cells)
    images = images.compute()
    whole = np.ones((images.shape[0], 2) + images.shape[2:], bool)
    channels = [str(c) for c in open_cells(cells).attrs["channels"]]
    parts = [measure_crops(images[i:i + 500], whole[i:i + 500], channels) for i in range(0, len(images), 500)]
    features = pd.concat(parts, ignore_index=True)
    features.index = obs.index
    features.to_parquet(out)
    return features


def dose_order(z: np.ndarray, obs: pd.DataFrame) -> dict:
    """Per-plate z-score vs DMSO cells, well means, bias-corrected distance of each treated well from its
    plate's DMSO cells; Spearman of dose vs distance (wells, dose means)."""
    keep = np.isfinite(z).all(0) & (np.nanstd(z, 0) > 0)
    cells = ad.AnnData(np.asarray(z[:, keep], np.float64), obs=obs[["plate", "well", "compound", "concentration"]]
                       .astype({"plate": str, "well": str, "compound": str}).copy())
    cells.obs_names = [str(i) for i in range(cells.n_obs)]
    pp.normalize(cells, control="compound == 'DMSO'", by="plate", method="zscore", clip=10)
    x = np.nan_to_num(np.asarray(cells.X))
    wells = []
    for (plate, well), idx in cells.obs.groupby(["plate", "well"], observed=True).indices.items():
        if cells.obs["compound"].iloc[idx[0]] == "DMSO":
            continue
        dmso = np.flatnonzero((cells.obs["plate"] == plate).to_numpy() & (cells.obs["compound"] == "DMSO").to_numpy())
        xw, xd = x[idx], x[dmso]
        plain = float(((xw.mean(0) - xd.mean(0)) ** 2).sum())
        corrected = plain - xw.var(0, ddof=1).sum() / len(xw) - xd.var(0, ddof=1).sum() / len(xd)
        wells.append({"plate": plate, "well": well, "dose": float(cells.obs["concentration"].iloc[idx[0]]),
                      "n_cells": len(idx), "distance2": float(corrected), "distance2_plain": plain})
    wells = pd.DataFrame(wells)
    means = wells.groupby("dose")[["distance2", "distance2_plain"]].mean()
    rho = lambda a, b: float(spearmanr(a, b).statistic)  # noqa: E731
    return {"spearman_wells": rho(wells["dose"], wells["distance2"]),
            "spearman_dose_means": rho(means.index, means["distance2"]),
            "spearman_wells_plain": rho(wells["dose"], wells["distance2_plain"]),
            "spearman_dose_means_plain": rho(means.index, means["distance2_plain"]),
            "dose_means": {f"{d:g}": float(v) for d, v in means["distance2"].items()},
            "dose_means_plain": {f"{d:g}": float(v) for d, v in means["distance2_plain"].items()},
            "wells": wells.to_dict(orient="records"), "n_features": int(keep.sum())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/cellkit_ssl_bbbc021_dose"))
    parser.add_argument("--methods", default="simclr", help="trained methods (random and pixel_pca always run)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="train each method for this many CPU-minutes (ssl_moa's planning) instead of --epochs")
    parser.add_argument("--one-pool", dest="both_pools", action="store_false",
                        help="embed each ResNet encoder only with its own embed_pool")
    parser.add_argument("--config", default="{}", help="JSON training options over RECIPE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results"
                        / "ssl_bbbc021_dose.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out
    cells, h5ad = real_crops(out)
    options = {**RECIPE, **json.loads(args.config)}
    if args.budget_minutes is None:
        options["epochs"] = args.epochs
    n_cells = ad.read_h5ad(h5ad, backed="r").n_obs
    timings, reps_keys = {}, {}
    present = embedded_weights(h5ad)  # an embedding is reused only when it came from the same weights
    for row in dict.fromkeys(["random", "pixel_pca", *args.methods.split(",")]):
        model_dir = out / row
        config_file = model_dir / "config.json"
        method, extra_options, _ = row_method(row)
        if method != "pixel_pca" and args.budget_minutes is not None:
            timing = train_within(cells, model_dir, method, 60 * args.budget_minutes, n_cells,
                                  {**options, **extra_options})
            print(f"{row}: {timing}", flush=True)
        elif not (config_file.exists() and json.loads(config_file.read_text()).get("complete")):
            start = time.perf_counter()
            config = {**options, **extra_options} if method != "pixel_pca" else {"seed": 0, "n_components": 50}
            train(cells, model_dir, method=method, config=config, overwrite=True)
            print(f"{row}: trained in {time.perf_counter() - start:.0f}s", flush=True)
        history = json.loads(config_file.read_text())["history"]
        trained = {"train_s": float(sum(h["seconds"] for h in history)), "epochs": len(history),
                   "train_cpu_s": float(sum(h.get("cpu_seconds", 0.0) for h in history))}
        for name, (key, pool) in embed_model(cells, model_dir, h5ad, row, present, args.both_pools).items():
            reps_keys[name] = key
            timings[name] = {**trained, "pool": pool}
    adata = ad.read_h5ad(h5ad)
    start = time.perf_counter()
    morphology = whole_crop_morphology(cells, out / "morphology_whole_crop.parquet").loc[adata.obs_names]
    print(f"morphology: {morphology.shape[1]} features in {time.perf_counter() - start:.0f}s", flush=True)
    reps = {"morphology": morphology.to_numpy(np.float64),
            **{name: adata.obsm[key] for name, key in reps_keys.items()}}
    y = (adata.obs["compound"].astype(str) != "DMSO").to_numpy().astype(int)
    plates = adata.obs["plate"].astype(str).to_numpy()
    rows = {}
    for name, z in reps.items():
        finite = np.isfinite(z).all(0) & (np.nanstd(z, 0) > 0)
        rows[name] = {"knn_bal_acc": cell_knn_lopo(z[:, finite], y, plates)["balanced_accuracy"],
                      **dose_order(z, adata.obs), **timings.get(name, {})}
    print(f"\n{'representation':<16}{'dim':>5}{'kNN bal.acc':>12}{'rho wells':>10}{'rho doses':>10}"
          f"   dose means of d^2 (5 / 15 / 50 uM)")
    for name, r in rows.items():
        d = r["dose_means"]
        print(f"{name:<16}{r['n_features']:>5}{r['knn_bal_acc']:>12.3f}{r['spearman_wells']:>10.3f}"
              f"{r['spearman_dose_means']:>10.3f}   {d['5']:.2f} / {d['15']:.2f} / {d['50']:.2f}")
    result = {"settings": {**vars(args), "out": str(out), "json": str(args.json)}, "recipe": options,
              "rows": rows, "versions": {"cellkit": cellkit.__version__, "torch": str(torch.__version__),
                                         "python": platform.python_version()}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str))
    print(f"written {args.json}")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
