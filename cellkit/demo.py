"""The demo: every stage of cellkit on a generated synthetic plate set.

`run_demo` runs the stages in order and returns a dict of output name -> path.
Each stage is skipped when its output already exists, so a rerun finishes an interrupted demo.
"""

from __future__ import annotations

from pathlib import Path

from .datasets import SyntheticConfig, synthetic_index, write_synthetic_plate
from .io import write_index

DEMO_CONFIG = SyntheticConfig()


def run_demo(out, config: SyntheticConfig = DEMO_CONFIG, *, log=print, progress=None) -> dict[str, Path]:
    """Run every stage on a synthetic plate set under ``out``.

    Outputs: ``plate/`` (images in BBBC021 layout, ground truth), ``index.parquet``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outputs = {"plate": out / "plate", "index": out / "index.parquet"}
    if not (outputs["plate"] / "synthetic.json").exists():
        log(f"synth: writing a synthetic plate set to {outputs['plate']}")
        write_synthetic_plate(outputs["plate"], config, progress=progress)
    index = synthetic_index(outputs["plate"])
    write_index(index, outputs["index"])
    log(f"index: {len(index)} fields, {index.plate.nunique()} plates -> {outputs['index']}")
    return outputs


# A short run on a small encoder: training on 512 cells, PCA fitted on the same, both embedding every cell
# (about a minute for the demo's ~6,000 cells on 2 idle CPU cores). Shows the stage, not a useful model.
DEMO_TRAINING = {"epochs": 1, "max_cells": 512, "batch_size": 64, "width": 8, "proj_hidden": 64, "proj_dim": 32,
                 "n_components": 20, "num_workers": 0, "seed": 0}


def demo_embeddings(cells_zarr, cells_h5ad, out_dir, *, config: dict | None = None, log=print) -> dict[str, Path]:
    """Train a short SimCLR run and fit PCA on ``cells_zarr``; write ``obsm["X_simclr"]``, ``obsm["X_pca"]``.

    Models go to ``out_dir/<method>``; ``cells_h5ad`` is updated in place (created from the store's
    obs when absent). A finished model or an existing embedding is not redone.
    Returns method -> model folder.
    """
    import anndata as ad

    from .models import EMBEDDING_KEYS, IncompleteModelError, embed_h5ad, load_model, train

    out_dir, cells_h5ad = Path(out_dir), Path(cells_h5ad)
    config = {**DEMO_TRAINING, **(config or {})}
    models = {}
    for method in ("simclr", "pca"):
        model_dir = models[method] = out_dir / method
        try:
            load_model(model_dir)
        except (FileNotFoundError, IncompleteModelError):
            log(f"train: {method} on {cells_zarr}")
            train(cells_zarr, model_dir, method=method, config=config, overwrite=True, log=log)
        key = EMBEDDING_KEYS[method]
        if not cells_h5ad.exists() or key not in ad.read_h5ad(cells_h5ad).obsm:
            embed_h5ad(cells_zarr, model_dir, cells_h5ad)
            log(f"embed: obsm[{key!r}] -> {cells_h5ad}")
    return models
