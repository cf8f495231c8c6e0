"""The real-crop probes of benchmarks/ssl_bbbc021*.py: the kNN vote, the linear probe and the ceiling benchmark's
plate folds."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ssl_bbbc021 import cell_knn_lopo, knn_vote, probe_lopo  # noqa: E402
from ssl_bbbc021_ceiling import plate_folds  # noqa: E402


def test_knn_vote_and_leave_one_plate_out():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    z = 0.3 * rng.normal(size=(80, 3)) + 4 * y[:, None] * np.eye(3)[0]  # class 1 far along the first axis
    plates = np.tile(np.repeat(["p1", "p2"], 20), 2)
    test = plates == "p1"
    assert (knn_vote(z, y, test, k=5) == y[test]).all()
    assert cell_knn_lopo(z, y, plates, k=5)["balanced_accuracy"] == 1.0
    # labels that do not follow the features: about chance
    shuffled = rng.permutation(y)
    assert cell_knn_lopo(z, shuffled, plates, k=5)["balanced_accuracy"] < 0.7
    # the supervised linear probe, leave one plate out: its labels' balanced accuracy beside its AUROC
    assert probe_lopo(z, y, plates, class_weight="balanced")["balanced_accuracy"] == 1.0
    assert probe_lopo(z, shuffled, plates, class_weight="balanced")["balanced_accuracy"] < 0.7


def test_plate_folds_pair_a_treated_plate_with_a_dmso_plate():
    obs = pd.DataFrame({"plate": ["B", "B", "A", "C", "D", "D"],
                        "compound": ["DMSO", "drug", "DMSO", "DMSO", "drug", "DMSO"]})
    assert plate_folds(obs) == [["B", "A"], ["D", "C"]]
    with pytest.raises(ValueError, match="as many plates"):
        plate_folds(obs[obs.plate != "C"])
