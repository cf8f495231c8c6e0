"""The demo: every stage of cellkit on a generated synthetic plate set.

`run_demo` runs the stages in order and returns a dict of output name -> path.
Each stage is skipped when its output already exists, so a rerun finishes an interrupted demo.
"""

from __future__ import annotations

from pathlib import Path

from .datasets import SyntheticConfig, synthetic_index, write_ground_truth_labels, write_synthetic_plate
from .io import write_index
from .profiles import demo_profiles

DEMO_CONFIG = SyntheticConfig()


def run_demo(out, config: SyntheticConfig = DEMO_CONFIG, *, log=print, progress=None) -> dict[str, Path]:
    """Run every stage on a synthetic plate set under ``out``.

    Outputs: ``plate/`` (images in BBBC021 layout, ground truth), ``index.parquet``,
    ``labels.zarr``, ``cells.zarr`` (+ ``cells.h5ad`` when per-cell features are available).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outputs = {"plate": out / "plate", "index": out / "index.parquet", "labels": out / "labels.zarr",
               "cells": out / "cells.zarr"}
    if not (outputs["plate"] / "synthetic.json").exists():
        log(f"synth: writing a synthetic plate set to {outputs['plate']}")
        write_synthetic_plate(outputs["plate"], config, progress=progress)
    index = synthetic_index(outputs["plate"])
    write_index(index, outputs["index"])
    log(f"index: {len(index)} fields, {index.plate.nunique()} plates -> {outputs['index']}")
    _extract(index, outputs, log=log)
    # profiles: wells, treatments, MOA scores, clusters and figures, once extraction has written cells.h5ad
    cells_h5ad, profiles = out / "cells.h5ad", out / "profiles"
    if cells_h5ad.exists():
        if not (profiles / "evaluation" / "scores.json").exists():
            cells_zarr = out / "cells.zarr"
            outputs.update(demo_profiles(cells_h5ad, profiles, cells_zarr=cells_zarr if cells_zarr.exists() else None,
                                         log=log))
        outputs["profiles"] = profiles
    return outputs


def _extract(index, outputs: dict, *, log) -> None:
    """Labels, then the single-cell store (and cells.h5ad with features when available)."""
    from .extract import extract_cells
    from .io.cells import IncompleteStoreError, open_cells
    from .io.labels import field_complete

    try:
        open_cells(outputs["cells"])
        log(f"extract: {outputs['cells']} is complete; skipped")
        if outputs["cells"].with_suffix(".h5ad").exists():
            outputs["cells_adata"] = outputs["cells"].with_suffix(".h5ad")
        return
    except (FileNotFoundError, IncompleteStoreError):
        pass

    # The segmentation stage is added in parallel; until it is wired in here, the demo's labels are
    # the synthetic plate's ground truth copied into labels.zarr.
    if not all(field_complete(outputs["labels"], f) for f in index.field_id):
        log(f"labels: ground-truth labels -> {outputs['labels']} (segmentation stage not wired in yet)")
        write_ground_truth_labels(outputs["plate"], outputs["labels"])
    try:
        from .features import measure_field
    except ImportError:
        measure_field = None
        log("extract: cellkit.features is not available; writing crops without per-cell features")
    result = extract_cells(index, outputs["labels"], outputs["cells"], size=64, border="drop",
                           measure=measure_field, workers=2, log=log)
    if result.adata is not None:
        outputs["cells_adata"] = result.adata
