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


@pytest.fixture(autouse=True)
def _seed_global_rngs():
    """Every test starts from the same global random state, whatever ran before it."""
    import random

    import numpy as np
    import torch

    random.seed(12345)
    np.random.seed(12345)
    torch.manual_seed(12345)
