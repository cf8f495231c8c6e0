"""The demo: every stage of cellkit on a generated synthetic plate set.

`run_demo` runs the stages in order and returns a dict of output name -> path.
Each stage is skipped when its output already exists, so a rerun finishes an interrupted demo.
"""

from __future__ import annotations

from pathlib import Path

from .datasets import SyntheticConfig, synthetic_index, write_synthetic_plate
from .io import write_index
from .profiles import demo_profiles

DEMO_CONFIG = SyntheticConfig()


def run_demo(out, config: SyntheticConfig = DEMO_CONFIG, *, log=print, progress=None) -> dict[str, Path]:
    """Run every stage on a synthetic plate set under ``out``.

    Outputs: ``plate/`` (images in BBBC021 layout, ground truth), ``index.parquet``, and
    ``profiles/`` (see `cellkit.profiles.demo_profiles`) once ``cells.h5ad`` exists.
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
    # profiles: wells, treatments, MOA scores, clusters and figures, once extraction has written cells.h5ad
    cells_h5ad, profiles = out / "cells.h5ad", out / "profiles"
    if cells_h5ad.exists():
        if not (profiles / "evaluation" / "scores.json").exists():
            cells_zarr = out / "cells.zarr"
            outputs.update(demo_profiles(cells_h5ad, profiles, cells_zarr=cells_zarr if cells_zarr.exists() else None,
                                         log=log))
        outputs["profiles"] = profiles
    return outputs
