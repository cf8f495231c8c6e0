"""Illumination correction on synthetic plates whose true illumination is known.

Plates: `SyntheticConfig` below (2 batches x 2 plates, 12 MOAs, 512 x 640 fields). Each plate and
channel has its own vignetting (`cellkit.datasets.synthetic._plate_effects`: a batch pattern, 20-50 % fall-off, times a plate one, 5-15 %).
Per plate and channel the flat field is estimated from the plate's 40 fields (`cellkit.illumination`):
aggregate = per-pixel mean (CellProfiler's Regular method) or per-pixel median, smoothing =
Gaussian sigma min(H, W)/8 or median window min(H, W)/4 (all four combinations), then:

1. error of the estimate: median over pixels of |estimate / truth - 1| (both scaled to mean 1);
   target <= 5 %;
2. position dependence of DMSO cells: Spearman correlation between each cell's mean intensity
   (Cells_Intensity_MeanIntensity_<channel>) and the true illumination at its centroid, and the
   ratio of the median intensity of cells in the brightest vs the darkest illumination quartile,
   before and after correction;
3. NSC / NSCB (1-NN cosine, rules in BENCHMARKS.md) of treatment profiles from the full
   morphology (`cellkit.features.measure_field`) of raw vs corrected fields, the segmentation held
   fixed at the ground-truth labels (so only the pixels differ), with cellkit's plain and best
   profile presets (`cellkit.workflows.profiles.PLAIN` / `BEST`), for mean+gaussian (CellProfiler's
   Regular) and median+median (cellkit's default, the best on seed 7).

Seeds: the first run (seed 5, mean aggregate only, results/illumination_seed5_mean_only.json)
missed the target; the median aggregate was added for the reason given in `cellkit.illumination`,
the default was chosen on seed 7 (--no-profiles) and seed 11 is the reported, untouched run.

Usage: OMP_NUM_THREADS=1 nice -n 10 python benchmarks/illumination.py [--seed 11] [--no-profiles]
       -> results/illumination_seed<SEED>.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

from cellkit import tl  # noqa: E402
from cellkit.datasets import SyntheticConfig  # noqa: E402
from cellkit.datasets.synthetic import _plate_effects, plate_layout, render_layout_field  # noqa: E402
from cellkit.features import measure_field  # noqa: E402
from cellkit.illumination import correct, estimate_plate, relative_error  # noqa: E402
from cellkit.workflows.profiles import BEST, PLAIN, prepare_profiles  # noqa: E402

CHANNELS = ["DNA", "Tubulin", "Actin"]
META = ["batch", "plate", "well", "compound", "concentration", "moa"]
# corrections whose profiles are measured: CellProfiler's Regular (mean) and the per-pixel median over fields
PROFILED = [("mean", "gaussian"), ("median", "median")]


def cell_table(images, nuclei, cells, field, truth):
    frame = measure_field(images, nuclei, cells, CHANNELS)
    labels = frame.index.to_numpy()
    centres = np.asarray(ndi.center_of_mass(np.ones_like(cells), cells, labels)).reshape(-1, 2)
    yx = np.rint(centres).astype(int)
    for c, ch in enumerate(CHANNELS):
        t = truth[c] / truth[c].mean()
        frame[f"true_illumination_{ch}"] = t[yx[:, 0], yx[:, 1]]
    for key in META:
        frame[key] = field[key]
    return frame.reset_index(drop=True)


def position_dependence(cells: pd.DataFrame) -> dict:
    dmso = cells[cells.compound == "DMSO"]
    out = {}
    for ch in CHANNELS:
        x, illum = dmso[f"Cells_Intensity_MeanIntensity_{ch}"], dmso[f"true_illumination_{ch}"]
        lo, hi = illum.quantile([0.25, 0.75])
        out[ch] = {"spearman": round(float(spearmanr(x, illum).statistic), 3),
                   "bright_over_dark_quartile": round(float(x[illum >= hi].median() / x[illum <= lo].median()), 3)}
    return out


def nsc(cells: pd.DataFrame) -> dict:
    feats = [c for c in cells.columns if c not in META and not c.startswith("true_illumination")]
    obs = cells[META].astype({"concentration": float}).astype({k: str for k in META if k != "concentration"})
    adata = ad.AnnData(cells[feats].to_numpy(np.float32), obs=obs.reset_index(drop=True),
                       var=pd.DataFrame(index=feats))
    adata.obs_names = adata.obs_names.astype(str)
    wells = tl.aggregate(adata, by=["plate", "well"], func="mean")
    out = {}
    for name, preset in (("plain", PLAIN), ("best", BEST)):
        treatments = prepare_profiles(wells, **preset)
        treatments = treatments[treatments.obs.compound != "DMSO"].copy()
        scores = tl.moa_accuracy(treatments, label="moa", compound="compound", batch="batch", key_added=None)
        out[name] = {"nsc": round(float(scores.nsc), 4), "nscb": round(float(scores.nscb), 4)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-profiles", dest="profiles", action="store_false",
                        help="Only the flat-field errors (no features, no NSC).")
    parser.add_argument("--name", default=None, help="Result name (default illumination_seed<SEED>).")
    args = parser.parse_args()
    config = SyntheticConfig(n_batches=2, plates_per_batch=2, compounds_per_moa=3, n_moas=12, n_concentrations=2,
                             dmso_wells=4, sites=1, height=512, width=640, seed=args.seed).validate()
    layout = plate_layout(config)
    t0 = time.perf_counter()
    errors, raw_cells = [], []
    corrected_cells = {"+".join(k): [] for k in PROFILED}
    for plate, fields in layout.groupby("plate", sort=False):
        effects = _plate_effects(config, int(fields.batch_index.iloc[0]), plate)
        truth = effects["illumination"]
        rendered = [render_layout_field(config, f, effects) for f in fields.to_dict("records")]
        flats = {}
        for aggregate in ("mean", "median"):
            for smoothing in ("gaussian", "median"):
                flat = estimate_plate([r[0] for r in rendered], CHANNELS, aggregate=aggregate, smoothing=smoothing)
                flats[aggregate, smoothing] = flat
                for c, ch in enumerate(CHANNELS):
                    errors.append({"plate": plate, "channel": ch, "method": f"{aggregate}+{smoothing}",
                                   "median_abs_rel_error": relative_error(flat[c], truth[c]),
                                   "uncorrected_error": relative_error(np.ones_like(truth[c]), truth[c])})
        if args.profiles:
            for f, (images, nuclei, cells) in zip(fields.to_dict("records"), rendered):
                raw_cells.append(cell_table(images, nuclei, cells, f, truth))
                for key, method in zip(PROFILED, corrected_cells):
                    corrected_cells[method].append(
                        cell_table(correct(images, flats[key], dtype=np.uint16), nuclei, cells, f, truth))
        print(f"{plate}: {len(fields)} fields, {time.perf_counter() - t0:.0f} s", flush=True)
    errors = pd.DataFrame(errors)
    summary = errors.groupby("method")["median_abs_rel_error"].agg(["median", "max"]).round(4)
    result = {
        "config": config.__dict__, "n_fields": len(layout),
        "flatfield_error": {"per_plate_channel": errors.round(4).to_dict("records"),
                            "summary": summary.to_dict("index"),
                            "uncorrected_median": round(float(errors.uncorrected_error.median()), 4),
                            "target": 0.05,
                            "met": {m: bool(summary.loc[m, "max"] <= 0.05) for m in summary.index}},
    }
    if args.profiles:
        raw = pd.concat(raw_cells, ignore_index=True)
        corrected = {m: pd.concat(parts, ignore_index=True) for m, parts in corrected_cells.items()}
        result["n_cells"] = len(raw)
        result["dmso_position_dependence"] = {"raw": position_dependence(raw),
                                              **{m: position_dependence(c) for m, c in corrected.items()}}
        result["moa"] = {"raw": nsc(raw), **{m: nsc(c) for m, c in corrected.items()}}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    save(args.name or f"illumination_seed{args.seed}", result)


if __name__ == "__main__":
    main()
