"""BBBC021 MOA benchmark on the Ljosa et al. 2013 CellProfiler per-well means (632 wells).

Every pipeline variant tried while building cellkit is scored here (NSC / NSCB, treatment =
mean and median of wells), then the plain and best pipelines are scored in full (NSC, NSCB, mAP,
leave-one-compound-out) and timed against pycytominer doing the same steps.

    nice -n 10 python benchmarks/profiles_bbbc021.py [--data ../shared/data/real/bbbc021_metadata] [--quick]

Prints and writes benchmarks/results/profiles_bbbc021.json. Note: the variants were chosen on
these same 103 treatments (there is no held-out set), so the best figures are optimistic.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import cellkit as ck
from cellkit.workflows.profiles import BEST, PLAIN, prepare_profiles

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "real" / "bbbc021_metadata"
TREATMENT = ["compound", "concentration"]


def load_wells(data: Path):
    wells = ck.io.read_profiles(data / "ljosa_jbiomolscreen_2013_per_well_mean.csv.gz")
    return ck.io.join_bbbc021(wells, data / "BBBC021_v1_image.csv.gz", data / "BBBC021_v1_moa.csv")


def nn_scores(wells, func: str, use_rep=None) -> tuple[float, float]:
    treatments = ck.tl.aggregate(wells, by=TREATMENT, func=func, use_rep=use_rep)
    treatments = treatments[treatments.obs.compound != "DMSO"].copy()
    result = ck.tl.moa_accuracy(treatments, key_added=None)
    return round(100 * result.nsc, 1), round(100 * result.nscb, 1)


def variants():
    """Every variant tried, as dicts (see `run_variant`)."""
    out = []
    for norm, select, sph, eps in itertools.product(["zscore", "robust"], [False, True],
                                                    ["none", "zca", "pca", "zca-cor"], [1e-3, 1e-2, 1e-1]):
        if sph == "none" and eps != 1e-3:
            continue
        out.append(dict(normalize=norm, select=select, spherize=sph, epsilon=eps))
    for norm in ["zscore", "robust"]:
        clip = 20 if norm == "robust" else None
        for eps, by in itertools.product([1, 10], [None, "batch"]):
            out.append(dict(normalize=norm, clip=clip, select=True, spherize="zca", epsilon=eps, spherize_by=by))
        for k, fit, kind in itertools.product([10, 20, 30, 50], ["dmso", "all"], ["fa", "pca"]):
            out.append(dict(normalize=norm, clip=clip, select=True, reduce=kind, k=k, fit=fit))
    for clip in [2, 3, 5, 10, 20, None]:
        out.append(dict(normalize="robust", clip=clip, select=True))
        for eps in ([0.3, 1, 3] if clip in (2, 3) else [3, 10, 30, 100]):
            out.append(dict(normalize="robust", clip=clip, select=True, spherize="zca", epsilon=eps))
    for clip in [5, 10]:
        out.append(dict(normalize="zscore", clip=clip, select=True))
        for eps in [3, 10, 30]:
            out.append(dict(normalize="zscore", clip=clip, select=True, spherize="zca", epsilon=eps))
    for clip, eps, method, by in itertools.product([6, 7, 8, 10, 15], [0.5, 1, 2, 3, 5], ["zca", "zca-cor"],
                                                   [None, "batch"]):
        if by == "batch" and (method == "zca-cor" or clip not in (7, 10, 15)):
            continue
        out.append(dict(normalize="robust", clip=clip, select=True, spherize=method, epsilon=eps, spherize_by=by))
    for corr in [0.8, 0.95, None]:
        out.append(dict(normalize="robust", clip=7, select=True, corr_threshold=corr, spherize="zca-cor", epsilon=1))
    for clip, eps, post in itertools.product([7, 8], [1, 2], [3, 5, "renorm"]):
        out.append(dict(normalize="robust", clip=clip, select=True, spherize="zca-cor", epsilon=eps, post=post))
    for clip, eps in [(7, 1), (8, 2), (8, 1), (10, 1)]:  # wells scaled to unit length before averaging
        out.append(dict(normalize="robust", clip=clip, select=True, spherize="zca-cor", epsilon=eps, post="l2"))
    return out


def _selected(wells, v: dict, cache: dict):
    """Normalized and feature-selected wells, shared by the variants that differ only later."""
    key = (v["normalize"], v.get("clip"), bool(v.get("select")), v.get("corr_threshold", 0.9))
    if key not in cache:
        w = wells.copy()
        ck.pp.normalize(w, method=v["normalize"], clip=v.get("clip"))
        if v.get("select"):
            if key[3] is None:
                ck.pp.feature_select(w, operations=["blocklist", "nan", "variance"])
            else:
                ck.pp.feature_select(w, corr_threshold=key[3])
        cache[key] = w
    return cache[key].copy()


def run_variant(wells, v: dict, cache: dict) -> dict:
    w = _selected(wells, v, cache)
    if v.get("spherize", "none") != "none":
        ck.pp.spherize(w, method=v["spherize"], epsilon=v["epsilon"], by=v.get("spherize_by"))
    post = v.get("post")
    if post == "renorm":
        ck.pp.normalize(w, method="robust", clip=v.get("clip"))
    elif post == "l2":
        ck.pp.l2_normalize(w)
    elif post is not None:
        w.X = np.clip(w.X, -post, post)
    rep = None
    if v.get("reduce"):
        from sklearn.decomposition import PCA, FactorAnalysis

        dmso = (w.obs.compound == "DMSO").to_numpy()
        model = (FactorAnalysis if v["reduce"] == "fa" else PCA)(v["k"], random_state=0)
        model.fit(w.X[dmso] if v["fit"] == "dmso" else w.X)
        w.obsm["X_reduced"] = model.transform(w.X)
        rep = "X_reduced"
    return {"mean": nn_scores(w, "mean", rep), "median": nn_scores(w, "median", rep), "n_features": int(w.n_vars)}


def full_scores(treatments) -> dict:
    treatments = treatments[treatments.obs.compound != "DMSO"].copy()
    acc = ck.tl.moa_accuracy(treatments, key_added=None)
    m = ck.tl.mean_average_precision(treatments, key_added=None).score
    loco = ck.tl.loco_classification(treatments, key_added=None).score
    return {"NSC": round(100 * acc.nsc, 1), "NSCB": round(100 * acc.nscb, 1), "n_NSC": acc.n_nsc,
            "n_NSCB": acc.n_nscb, "mAP": round(m, 3), "LOCO": round(100 * loco, 1),
            "per_moa_nsc": acc.per_label("nsc")["accuracy"].round(3).to_dict()}


def pycytominer_pipeline(wells, *, method: str, select: bool, clip: float | None = None,
                         spherize: bool = False, l2: bool = False, operation: str = "mean"):
    """The same steps with pycytominer: per-plate normalize vs DMSO, feature_select, aggregate."""
    from pycytominer import aggregate, feature_select, normalize

    table = ck.io.to_table(wells)
    meta = [c for c in table.columns if c.startswith("Metadata_")]
    features = list(wells.var_names)
    plates = []
    for _, plate in table.groupby("Metadata_plate", sort=True):
        plates.append(normalize(plate, features=features, meta_features=meta, method=method,
                                samples="Metadata_compound == 'DMSO'"))
    table = pd.concat(plates)
    if clip is not None:
        table[features] = table[features].clip(-clip, clip)
    if select:
        table = feature_select(table, features=features, operation=["variance_threshold", "correlation_threshold",
                                                                    "drop_na_columns", "blocklist"])
        features = [c for c in table.columns if not c.startswith("Metadata_")]
    if spherize:
        table = normalize(table, features=features, meta_features=meta, method="spherize",
                          spherize_method="ZCA-cor", samples="Metadata_compound == 'DMSO'")
    if l2:  # pycytominer has no row scaling: done with numpy
        values = table[features].to_numpy(dtype=float)
        table[features] = values / np.linalg.norm(values, axis=1, keepdims=True)
    treat = aggregate(table, strata=["Metadata_compound", "Metadata_concentration"], features=features,
                      operation=operation, output_type=None)
    treat = treat.merge(table[["Metadata_compound", "Metadata_concentration", "Metadata_moa", "Metadata_batch"]]
                        .drop_duplicates(["Metadata_compound", "Metadata_concentration"]),
                        on=["Metadata_compound", "Metadata_concentration"])
    return ck.io.from_table(treat)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true", help="Skip the variant grid.")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    wells = load_wells(args.data)
    print(f"{wells.n_obs} wells x {wells.n_vars} features, {wells.obs.moa.nunique() - 1} MOAs")
    results = {"data": str(args.data), "n_wells": wells.n_obs, "variants": []}
    if not args.quick:
        t = time.perf_counter()
        cache = {}
        for v in variants():
            scores = run_variant(wells, v, cache)
            results["variants"].append({**v, **scores})
            print(f"{json.dumps(v):<130} mean {scores['mean']}  median {scores['median']}", flush=True)
        print(f"{len(results['variants'])} variants in {time.perf_counter() - t:.0f} s")

    pipelines = {
        "plain (cellkit default: zscore vs DMSO per plate, treatment = mean)": ("cellkit", PLAIN),
        "robust + feature_select, mean": ("cellkit", dict(normalize="robust", select=True, treatment_func="mean")),
        "best (robust clip 8 + select + ZCA-cor eps 1 on DMSO + unit-length wells, mean)": ("cellkit", BEST),
    }
    for name, (_, params) in pipelines.items():
        t = time.perf_counter()
        treatments = prepare_profiles(wells, treatment=TREATMENT, **params)
        wall = time.perf_counter() - t
        scores = full_scores(treatments)
        results[f"cellkit: {name}"] = {**scores, "wall_s": round(wall, 2), "params": params}
        print(f"cellkit {name}: NSC {scores['NSC']} NSCB {scores['NSCB']} mAP {scores['mAP']} "
              f"LOCO {scores['LOCO']}  ({wall:.2f} s)")
    pyc = {
        "plain (standardize vs DMSO per plate, mean)": dict(method="standardize", select=False),
        "robust + feature_select, mean": dict(method="mad_robustize", select=True),
        "best-equivalent (mad_robustize, clip 8, select, spherize ZCA-cor, unit-length wells, mean)":
            dict(method="mad_robustize", select=True, clip=8.0, spherize=True, l2=True),
    }
    for name, params in pyc.items():
        t = time.perf_counter()
        treatments = pycytominer_pipeline(wells, **params)
        wall = time.perf_counter() - t
        scores = full_scores(treatments)
        results[f"pycytominer: {name}"] = {**scores, "wall_s": round(wall, 2)}
        print(f"pycytominer {name}: NSC {scores['NSC']} NSCB {scores['NSCB']} mAP {scores['mAP']} "
              f"LOCO {scores['LOCO']}  ({wall:.2f} s)")
    import pycytominer

    results["versions"] = {"cellkit": ck.__version__, "pycytominer": getattr(pycytominer, "__version__", "?")}
    dest = HERE / "results" / "profiles_bbbc021.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(results, indent=2, default=str))
    print(f"-> {dest}")


if __name__ == "__main__":
    main()
