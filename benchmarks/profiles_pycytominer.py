"""cellkit's default profile pipeline beside pycytominer's documented recipes, on the same 632 BBBC021 wells.

pycytominer (its README and the cytomining profiling-recipe): ``normalize`` per plate (``mad_robustize``
or ``standardize``; ``samples="all"`` = every well of the plate, or the negative controls), then
``feature_select`` with ``["variance_threshold", "correlation_threshold", "drop_na_columns",
"blocklist"]`` over all plates, then ``consensus`` (median of replicate wells) per treatment;
optionally ``normalize(method="spherize")`` fitted on the DMSO wells (its defaults: ZCA-cor,
epsilon 1e-6). Every pycytominer argument not named here is its default. Treatments are scored
by cellkit's NSC / NSCB / mAP / LOCO (the scorers are checked against copairs in the tests).

    OMP_NUM_THREADS=1 nice python benchmarks/profiles_pycytominer.py

Prints and writes benchmarks/results/profiles_pycytominer.json.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402
from _profiles_data import TREATMENT, full_scores, load  # noqa: E402

import cellkit as ck  # noqa: E402
from cellkit.workflows.profiles import DEFAULT, prepare_profiles  # noqa: E402

DMSO = "Metadata_compound == 'DMSO'"
OPERATIONS = ["variance_threshold", "correlation_threshold", "drop_na_columns", "blocklist"]


def pycytominer_recipe(wells, *, method: str, samples: str, spherize: bool = False):
    """pycytominer's steps on the wells; returns treatment profiles (AnnData) with moa and batch."""
    from pycytominer import consensus, feature_select, normalize

    table = ck.io.to_table(wells)
    meta = [c for c in table.columns if c.startswith("Metadata_")]
    features = list(wells.var_names)
    table = pd.concat([normalize(plate, features=features, meta_features=meta, samples=samples, method=method)
                       for _, plate in table.groupby("Metadata_plate", sort=True)])
    table = feature_select(table, features=features, operation=OPERATIONS)
    features = [c for c in table.columns if c not in meta]
    if spherize:
        table = normalize(table, features=features, meta_features=meta, samples=DMSO, method="spherize")
    treat = consensus(table, replicate_columns=["Metadata_compound", "Metadata_concentration"], features=features)
    labels = table[["Metadata_compound", "Metadata_concentration", "Metadata_moa", "Metadata_batch"]].drop_duplicates(
        ["Metadata_compound", "Metadata_concentration"])
    return ck.io.from_table(treat.merge(labels, on=["Metadata_compound", "Metadata_concentration"])), len(features)


def main():
    warnings.simplefilter("ignore")
    from importlib.metadata import version

    wells = load("ljosa")
    results = {"default": DEFAULT, "pycytominer_version": version("pycytominer")}
    runs = {
        "cellkit default": lambda: (prepare_profiles(wells, treatment=TREATMENT, **DEFAULT), None),
        "pycytominer mad_robustize (samples=all) + feature_select + consensus median":
            lambda: pycytominer_recipe(wells, method="mad_robustize", samples="all"),
        "pycytominer mad_robustize (samples=DMSO) + feature_select + consensus median":
            lambda: pycytominer_recipe(wells, method="mad_robustize", samples=DMSO),
        "pycytominer standardize (samples=all) + feature_select + consensus median":
            lambda: pycytominer_recipe(wells, method="standardize", samples="all"),
        "pycytominer mad_robustize (samples=all) + feature_select + spherize on DMSO + consensus median":
            lambda: pycytominer_recipe(wells, method="mad_robustize", samples="all", spherize=True),
    }
    for name, run in runs.items():
        t = time.perf_counter()
        treatments, n_features = run()
        wall = time.perf_counter() - t
        results[name] = {**full_scores(treatments), "n_features": n_features or treatments.n_vars,
                         "wall_s": round(wall, 2)}
        r = results[name]
        print(f"{name}: NSC {r['NSC']} NSCB {r['NSCB']} mAP {r['mAP']} LOCO {r['LOCO']} "
              f"({r['n_features']} features, {wall:.1f} s)", flush=True)
    pyc = load("pycytominer")
    for name, params in [("pycytominer-processed file, no processing, treatment = mean",
                          dict(normalize="none", select=False, spherize="none", l2=False, treatment_func="mean")),
                         ("pycytominer-processed file, cellkit default", DEFAULT)]:
        results[name] = full_scores(prepare_profiles(pyc, treatment=TREATMENT, **params))
        r = results[name]
        print(f"{name}: NSC {r['NSC']} NSCB {r['NSCB']} mAP {r['mAP']} LOCO {r['LOCO']}", flush=True)
    save("profiles_pycytominer", results)


if __name__ == "__main__":
    main()
