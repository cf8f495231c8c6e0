"""SSL encoders vs PCA vs random-init on the real BBBC021 crops: DMSO vs cycloheximide.

Imports ``shared/data/real/bbbc021_singlecell_crops`` into a cells.zarr, trains every method
(SimCLR, BYOL, autoencoder, PCA, random-init) at 64x64 on the CPU, embeds all 2,999 crops, and scores
leave-one-plate-out:
- cell level: a logistic-regression probe on standardized embeddings, trained on the other
  plates; AUROC of the pooled out-of-plate scores, and the mean AUROC over the plates that hold
  both classes;
- cell level, no training: cosine kNN (k=15) vote among the cells of the other plates; balanced accuracy;
- well level: well profile = mean of standardized cell embeddings; each well's cosine nearest
  neighbour among the wells of other plates; accuracy of its DMSO/cycloheximide label.
Also records training throughput (crops/s, augmentation and data loading included).

Usage: nice -n 10 python benchmarks/ssl_bbbc021.py [--methods simclr,...] [--epochs 3] [--width 32] [--out DIR]
A finished model in DIR is reused (and embedded if its embedding is missing), so the methods can be
trained in separate runs, or with `cellkit train --resume`, and scored together.
Writes benchmarks/results/ssl_bbbc021.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import cellkit
from cellkit.io import import_bbbc021_crops
from cellkit.models import EMBEDDING_KEYS, embed_h5ad, train

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "bbbc021_singlecell_crops"
if not REAL.exists():
    REAL = Path("/work/shared/data/real/bbbc021_singlecell_crops")


def probe_lopo(z: np.ndarray, y: np.ndarray, plates: np.ndarray, c: float = 0.1,
               class_weight: str | None = None) -> dict:
    """Leave-one-plate-out logistic-regression probe (inverse regularization ``c``, sklearn's ``class_weight``);
    pooled and per-plate AUROC, and the balanced accuracy of its labels (score > 0.5)."""
    from sklearn.metrics import balanced_accuracy_score

    scores = np.empty(len(y))
    per_plate = {}
    for plate in np.unique(plates):
        test = plates == plate
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, class_weight=class_weight))
        clf.fit(z[~test], y[~test])
        scores[test] = clf.predict_proba(z[test])[:, 1]
        if len(np.unique(y[test])) == 2:
            per_plate[str(plate)] = float(roc_auc_score(y[test], scores[test]))
    return {"auroc_pooled": float(roc_auc_score(y, scores)), "auroc_per_plate": per_plate,
            "auroc_mean_plates": float(np.mean(list(per_plate.values()))),
            "balanced_accuracy": float(balanced_accuracy_score(y, scores > 0.5))}


def knn_vote(z: np.ndarray, y: np.ndarray, test: np.ndarray, k: int = 15) -> np.ndarray:
    """Binary labels (int) of the ``test`` rows of ``z`` (N, D) by a majority vote of their ``k`` cosine nearest
    neighbours among the other rows (features standardized over all N rows first)."""
    z = (z - z.mean(0)) / (z.std(0) + 1e-8)
    z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-12
    sim = z[test] @ z[~test].T
    nearest = np.argpartition(-sim, k, axis=1)[:, :k]
    return (y[~test][nearest].mean(1) > 0.5).astype(int)


def cell_knn_lopo(z: np.ndarray, y: np.ndarray, plates: np.ndarray, k: int = 15) -> dict:
    """Leave-one-plate-out cosine kNN vote at cell level; balanced accuracy (a probe without training).

    More sensitive to the geometry of an embedding than the linear probe, which can find a good
    direction even in random features.
    """
    from sklearn.metrics import balanced_accuracy_score

    pred = np.empty(len(y), int)
    for plate in np.unique(plates):
        test = plates == plate
        pred[test] = knn_vote(z, y, test, k)
    return {"k": k, "balanced_accuracy": float(balanced_accuracy_score(y, pred))}


def well_1nn(z: np.ndarray, y: np.ndarray, plates: np.ndarray, wells: np.ndarray) -> dict:
    """Cosine 1-NN of well-mean profiles, neighbours restricted to other plates."""
    z = (z - z.mean(0)) / (z.std(0) + 1e-8)
    keys = sorted(set(zip(plates, wells)))
    prof = np.stack([z[(plates == p) & (wells == w)].mean(0) for p, w in keys])
    lab = np.array([y[(plates == p) & (wells == w)][0] for p, w in keys])
    wplate = np.array([p for p, _ in keys])
    prof /= np.linalg.norm(prof, axis=1, keepdims=True) + 1e-12
    sim = prof @ prof.T
    sim[wplate[:, None] == wplate[None, :]] = -np.inf
    nn = sim.argmax(1)
    return {"accuracy": float((lab[nn] == lab).mean()), "n_wells": len(keys)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/cellkit_ssl_bbbc021"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ae-epochs", type=int, default=None)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default="random,pca,simclr,byol,autoencoder")
    parser.add_argument("--retrain", action="store_true", help="Train again even when a finished model exists.")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "ssl_bbbc021.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out
    cells, h5ad = out / "cells.zarr", out / "cells.h5ad"
    if not cells.exists():
        import_bbbc021_crops(REAL / "bbbc021_crops_68x68_subset.npz", REAL / "index.csv", cells, h5ad)
    results = {"settings": vars(args) | {"out": str(out)}, "torch_threads": torch.get_num_threads(),
               "cellkit_version": cellkit.__version__, "methods": {}}
    for method in args.methods.split(","):
        model_dir = out / method
        config_file = model_dir / "config.json"
        done = config_file.exists() and json.loads(config_file.read_text()).get("complete")
        if not done or args.retrain:  # a finished model is reused: methods can be trained in separate runs
            epochs = args.ae_epochs if method == "autoencoder" and args.ae_epochs else args.epochs
            config = {"epochs": epochs, "width": args.width, "batch_size": args.batch_size, "num_workers": 1,
                      "seed": 0}
            resume = not args.retrain and (model_dir / "checkpoint.pt").exists()  # an interrupted run goes on
            start = time.perf_counter()
            train(cells, model_dir, method=method, config=None if resume else config, resume=resume,
                  overwrite=not resume)
            print(f"{method}: trained in {time.perf_counter() - start:.0f}s", flush=True)
        if not done or args.retrain or EMBEDDING_KEYS[method] not in ad.read_h5ad(h5ad).obsm:
            start = time.perf_counter()
            embed_h5ad(cells, model_dir, h5ad)
            print(f"{method}: embedded in {time.perf_counter() - start:.0f}s", flush=True)
        saved = json.loads(config_file.read_text())
        history = saved["history"]
        results["methods"][method] = {
            "epochs": saved["epochs_done"], "width": saved["width"], "batch_size": saved["batch_size"],
            "train_seconds": float(sum(h["seconds"] for h in history)),
            "train_crops_per_s": float(np.mean([h["cells_per_s"] for h in history])) if history else None,
            "loss": [h.get("loss") for h in history]}
    adata = ad.read_h5ad(h5ad)
    y = (adata.obs["compound"].astype(str) != "DMSO").to_numpy().astype(int)
    plates = adata.obs["plate"].astype(str).to_numpy()
    wells = adata.obs["well"].astype(str).to_numpy()
    rows = []
    for method, info in results["methods"].items():
        z = adata.obsm[EMBEDDING_KEYS[method]]
        info["probe"] = probe_lopo(z, y, plates)
        info["cell_knn"] = cell_knn_lopo(z, y, plates)
        info["well_1nn"] = well_1nn(z, y, plates, wells)
        info["dim"] = int(z.shape[1])
        rows.append((method, info))
    print(f"\n{'method':<12}{'dim':>5}{'epochs':>7}{'train s':>9}{'crops/s':>9}{'AUROC pooled':>14}"
          f"{'AUROC plates':>14}{'kNN bal.acc':>13}{'well 1-NN':>11}")
    for method, info in rows:
        speed = f"{info['train_crops_per_s']:.0f}" if info["train_crops_per_s"] else "-"
        print(f"{method:<12}{info['dim']:>5}{info['epochs']:>7}{info['train_seconds']:>9.0f}{speed:>9}"
              f"{info['probe']['auroc_pooled']:>14.3f}{info['probe']['auroc_mean_plates']:>14.3f}"
              f"{info['cell_knn']['balanced_accuracy']:>13.3f}"
              f"{info['well_1nn']['accuracy']:>11.3f}")
    dest = args.json
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=2, default=str))
    print(f"written {dest}")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # cellkit's log (epochs, extraction)
    main()
