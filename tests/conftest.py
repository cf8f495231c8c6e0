"""Shared fixtures: small synthetic plate sets and the real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cellkit.datasets import SyntheticConfig, write_synthetic_plate

# The real data folder: $CELLKIT_REAL_DATA, or ../shared/data/real beside the repository.
REAL = Path(os.environ.get("CELLKIT_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))

# A small plate set: 2 batches x 1 plate, 4 MOAs x 2 compounds x 2 concentrations, 2 DMSO wells.
SMALL = SyntheticConfig(n_batches=2, plates_per_batch=1, compounds_per_moa=2, n_moas=4, n_concentrations=2,
                        dmso_wells=2, sites=1, height=256, width=320, seed=7)


def real_path(*parts: str) -> Path:
    """Path under ../shared/data/real; skips the test with a clear reason when it is absent."""
    path = REAL.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (set CELLKIT_REAL_DATA or put shared/data/real beside the repository)")
    return path


@pytest.fixture(scope="session")
def small_plate(tmp_path_factory) -> Path:
    """A small synthetic plate set written once per test session (do not modify)."""
    root = tmp_path_factory.mktemp("plates") / "small"
    write_synthetic_plate(root, SMALL)
    return root


@pytest.fixture(scope="session")
def tiny_cells(tmp_path_factory) -> Path:
    """A tiny cells.zarr: 2 plates x 6 wells (2 DMSO, 2 MOAs x 2 compounds) x 6 cells, 20 x 20 crops.

    MOA A: big bright nuclei, B: small dim ones. Masks: nucleus = disk of 1.2 x the blob radius,
    cell = disk of radius 7.5 px, both centred. Do not modify.
    """
    import numpy as np
    import pandas as pd

    from cellkit.io.cells import write_cells

    path = tmp_path_factory.mktemp("tiny") / "cells.zarr"
    rng = np.random.default_rng(0)
    size, per_well = 20, 6
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    layout = [("DMSO", None), ("DMSO", None), ("c1", "A"), ("c2", "A"), ("c3", "B"), ("c4", "B")]
    images, masks, rows = [], [], []
    for plate in ("P1", "P2"):
        for w, (compound, moa) in enumerate(layout):
            for c in range(per_well):
                radius = {"A": 5.0, "B": 2.0, None: 3.5}[moa] + rng.normal(0, 0.3)
                blob = np.exp(-(yy ** 2 + xx ** 2) / (2 * radius ** 2))
                img = rng.poisson(50, (3, size, size)).astype(np.float64)
                img[0] += blob * {"A": 2500, "B": 800, None: 1500}[moa]
                img[1] += blob * 600 * rng.random()
                img[2] += 400 * rng.random()
                images.append(img)
                masks.append([yy ** 2 + xx ** 2 <= (1.2 * radius) ** 2, yy ** 2 + xx ** 2 <= 7.5 ** 2])
                rows.append({"cell_id": f"{plate}/W{w}/1/{c + 1}", "plate": plate, "well": f"W{w}",
                             "compound": compound, "moa": moa})
    write_cells(path, np.asarray(images).astype(np.uint16), np.asarray(masks), pd.DataFrame(rows),
                channels=["DNA", "Tubulin", "Actin"], chunk_cells=16)
    return path


@pytest.fixture(autouse=True)
def _seed_global_rngs():
    """Every test starts from the same global random state, whatever ran before it."""
    import random

    import numpy as np
    import torch

    random.seed(12345)
    np.random.seed(12345)
    torch.manual_seed(12345)


@pytest.fixture
def cellpose_one_thread(monkeypatch, tmp_path):
    """Cellpose tests: one torch thread, and an empty Cellpose weights cache (nothing is downloaded)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "cellpose_cache"))
    yield
    torch.set_num_threads(threads)
