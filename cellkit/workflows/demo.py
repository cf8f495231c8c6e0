"""The demo: every cellkit stage on a generated synthetic plate set.

`DEMO_PIPELINE` is the pipeline that ``cellkit demo`` runs; ``pipelines/demo.yaml`` is the same
pipeline as a file for ``cellkit run`` (a test keeps the two equal). A rerun skips finished stages.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..datasets import SyntheticConfig
from .pipeline import run_pipeline

DEMO_CONFIG = SyntheticConfig()

# The embedding stage trains a small SimCLR encoder briefly and fits PCA: it shows the stage,
# it does not make a useful model (see docs/models.md for real training settings).
DEMO_TRAINING = {"epochs": 1, "max_cells": 512, "batch_size": 64, "width": 8, "proj_hidden": 64, "proj_dim": 32,
                 "n_components": 20, "num_workers": 0, "seed": 0}
DEMO_STAGES = [
    {"segment": {"backend": "classical"}},
    {"extract": {"size": 64}},
    {"embed": {"methods": ["simclr", "pixel_pca"], "config": DEMO_TRAINING}},
    {"profile": {}},
]


def demo_pipeline(config: SyntheticConfig = DEMO_CONFIG, output: str = "demo_out") -> dict:
    """The demo pipeline spec for a synthetic plate set made with ``config``."""
    return {"name": "demo", "output": output, "input": {"synthetic": asdict(config)}, "stages": DEMO_STAGES}


def run_demo(out, config: SyntheticConfig | None = None, *, workers: int | None = None,
             progress=None) -> dict[str, Path]:
    """Run every stage on a synthetic plate set under ``out``; returns output name -> path.

    Outputs: ``plate/`` (BBBC021 layout + ground truth), ``index.parquet``, ``labels.zarr`` (+ QC),
    ``cells.zarr``, ``cells.h5ad`` (morphology in X, embeddings in obsm), ``models/``, ``profiles/`` (wells, treatments, MOA scores,
    clusters, figures), ``pipeline.log``, ``provenance.json``. Messages go to ``logging.getLogger("cellkit")``.
    """
    return run_pipeline(demo_pipeline(config or DEMO_CONFIG, str(out)), workers=workers, progress=progress)
