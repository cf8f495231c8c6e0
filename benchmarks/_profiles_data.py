"""The three well-profile datasets of the profile benchmarks, and fast scoring helpers.

- ``ljosa``: the Ljosa et al. 2013 CellProfiler per-well means of BBBC021 (632 wells x 516
  features), joined to compound / concentration / MOA / batch (week) by plate and well.
- ``pycytominer``: ``BBBC021_feature_selected_mad_robustize.csv.gz`` (the same 632 wells after
  pycytominer's MAD-robustize + feature selection, 189 features); batch = week prefix of the plate.
- ``synthetic``: cellkit's own synthetic plates (``pipelines/synthetic_profiles.yaml``: cellkit synth ->
  classical segmentation -> CellProfiler-like features in cells.h5ad) aggregated to well means;
  features that are NaN in any well are dropped.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import cellkit as ck
from cellkit.workflows.profiles import evaluate_profiles

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "real" / "bbbc021_metadata"
SYNTH = HERE.parent / "synth_profiles" / "cells.h5ad"
TREATMENT = ["compound", "concentration"]


def load(name: str, *, data: Path = DATA, synth: Path = SYNTH) -> ad.AnnData:
    """Well profiles of dataset ``name`` with obs plate, well, compound, concentration, moa, batch."""
    if name == "ljosa":
        wells = ck.io.read_profiles(data / "ljosa_jbiomolscreen_2013_per_well_mean.csv.gz")
        return ck.io.join_bbbc021(wells, data / "BBBC021_v1_image.csv.gz", data / "BBBC021_v1_moa.csv")
    if name == "pycytominer":
        wells = ck.io.read_profiles(data / "BBBC021_feature_selected_mad_robustize.csv.gz")
        wells.obs["batch"] = wells.obs["plate"].astype(str).str.split("_").str[0].to_numpy()
        return wells
    if name == "synthetic":
        if not Path(synth).exists():
            raise FileNotFoundError(f"{synth} is missing: run `cellkit run pipelines/synthetic_profiles.yaml "
                                    f"--out {Path(synth).parent}` first")
        wells = ck.tl.aggregate(synth, by=("plate", "well"))
        wells = wells[:, ~np.isnan(wells.X).any(axis=0) & (np.nanstd(wells.X, axis=0) > 0)].copy()
        wells.obs["moa"] = wells.obs["moa"].astype(str).replace({"nan": "DMSO", "None": "DMSO"})
        return wells
    raise ValueError(f"unknown dataset {name!r}")


class Scorer:
    """Cosine 1-NN NSC / NSCB of treatment profiles (BENCHMARKS.md rules), with optional
    restriction of queries and candidates to a subset, as numpy on a fixed treatment order.

    Same rules as `ck.tl.moa_accuracy` (the benchmark checks the two agree on the chosen pipeline).
    """

    def __init__(self, treatments_obs: pd.DataFrame):
        obs = treatments_obs
        self.labels = obs["moa"].astype(str).to_numpy()
        self.compounds = obs["compound"].astype(str).to_numpy()
        self.batches = obs["batch"].astype(str).to_numpy()
        self.same_label = self.labels[:, None] == self.labels[None, :]
        self.rules = {"nsc": self.compounds[:, None] != self.compounds[None, :]}
        self.rules["nscb"] = self.rules["nsc"] & (self.batches[:, None] != self.batches[None, :])

    def correct(self, sim: np.ndarray, rule: str, candidates: np.ndarray | None = None) -> np.ndarray:
        """Per query: 1.0 correct, 0.0 wrong, NaN excluded (no allowed neighbour shares its label)."""
        allowed = self.rules[rule] if candidates is None else self.rules[rule] & candidates[None, :]
        masked = np.where(allowed, sim, -np.inf)
        best = masked.argmax(axis=1)
        valid = (allowed & self.same_label).any(axis=1)
        out = (self.labels[best] == self.labels).astype(float)
        out[~valid] = np.nan
        return out


def cosine(T: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(T, axis=1)
    U = T / np.where(norms > 0, norms, 1.0)[:, None]
    return U @ U.T


def group_rows(obs: pd.DataFrame, by=TREATMENT) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Treatment table (first row of each group, sorted like `ck.tl.aggregate`) and row indices per group."""
    keys = obs[by].astype(str).agg("/".join, axis=1).to_numpy()
    names, codes = np.unique(keys, return_inverse=True)
    rows = [np.flatnonzero(codes == k) for k in range(len(names))]
    first = obs.iloc[[r[0] for r in rows]].copy()
    first.index = names
    if "batch" in obs:
        batches = obs["batch"].astype(str).to_numpy()
        first["batch"] = [batches[r[0]] if len(set(batches[r])) == 1 else "mixed" for r in rows]
    return first, rows


def aggregate_rows(X: np.ndarray, rows: list[np.ndarray], func: str) -> np.ndarray:
    f = np.mean if func == "mean" else np.median
    return np.stack([f(X[r], axis=0) for r in rows])


def full_scores(treatments: ad.AnnData) -> dict:
    """NSC, NSCB, mAP and LOCO of treatment profiles with cellkit's own scoring (controls dropped)."""
    summary = evaluate_profiles(treatments, figures=False)
    return {"NSC": _pct(summary["NSC"]), "NSCB": _pct(summary["NSCB"]), "n_NSC": summary["n_NSC"],
            "n_NSCB": summary["n_NSCB"], "mAP": round(float(summary["mAP"]), 3), "LOCO": _pct(summary["LOCO"])}


def _pct(value):
    return None if value is None or not np.isfinite(value) else round(100 * float(value), 1)
