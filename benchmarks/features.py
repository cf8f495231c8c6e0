"""Benchmark of cellkit.features: speed against cp_measure, agreement, and MOA accuracy.

Prints and writes ``benchmarks/results/features.json``:

- per group, seconds of `measure_field(groups=(group,))` (3 compartments x 3 channels) on 1024x1280
  synthetic fields with ~100 cells and of cp_measure 0.3's matching functions on the same fields
  and masks in the same run (sizeshape + zernike + feret per compartment; intensity, texture,
  granularity, radial distribution, radial Zernikes per channel; Pearson and Manders per channel
  pair), and the ratio; each group is measured by both in turn (interleaved), since the machine
  may be shared; then cells/s of cellkit's full set in one call against the sum of cp_measure's;
- the largest relative difference to cp_measure per AreaShape / Intensity feature on those fields
  (Zernike: absolute difference in pixel weights 1 / (pi r^2), see cellkit/features/README.md);
- leave-compound-out 1-NN MOA accuracy of treatment profiles from morphology alone on a
  synthetic plate set (ground-truth labels).

Run: ``nice -n 10 python benchmarks/features.py [--fields 2] [--moas 12]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from cellkit.datasets import CHANNELS, SyntheticConfig, phenotype, plate_layout, render_field, render_layout_field
from cellkit.features import compartment_labels, measure_field
from cellkit.features.texture import HARALICK as TEXTURE


def synthetic_fields(n: int, seed: int = 0):
    params = phenotype()
    params["density"] = 0.5  # ~100 cells on 1024x1280
    return [render_field(params, (1024, 1280), rng=np.random.default_rng([seed, i])) for i in range(n)]


CP_SHAPE = ("sizeshape", "zernike", "feret")
CP_CHANNEL = ("intensity", "texture", "granularity", "radial_distribution", "radial_zernikes")
# cellkit group -> what cp_measure computes for it (shape functions per compartment, channel
# functions per compartment and channel, correlation per compartment and channel pair)
GROUP_MAP = {"AreaShape": dict(shape_fns=CP_SHAPE, channel_fns=(), correlation=False),
             "Intensity": dict(shape_fns=(), channel_fns=("intensity",), correlation=False),
             "Texture": dict(shape_fns=(), channel_fns=("texture",), correlation=False),
             "Granularity": dict(shape_fns=(), channel_fns=("granularity",), correlation=False),
             "RadialDistribution": dict(shape_fns=(), channel_fns=("radial_distribution",), correlation=False),
             "RadialZernikes": dict(shape_fns=(), channel_fns=("radial_zernikes",), correlation=False),
             "Correlation": dict(shape_fns=(), channel_fns=(), correlation=True),
             "Costes": dict(shape_fns=(), channel_fns=(), correlation=("costes",))}  # not in cellkit's default set
OPTIONAL = ("Costes",)


def cp_measure_field(images, nuclei, cells, *, channel_fns=CP_CHANNEL, shape_fns=CP_SHAPE, correlation=True):
    """cp_measure on every compartment and channel; returns {compartment: {feature|channel: values}}.
    ``correlation``: True (Pearson and Manders), False, or a tuple of cp_measure correlation names."""
    import functools
    import warnings

    from cp_measure.bulk import get_core_measurements, get_correlation_measurements

    core = get_core_measurements(legacy=True)
    corr = get_correlation_measurements()
    corr["costes"] = functools.partial(corr["costes"], scale_max=65535)  # float pixels on the 16-bit grid
    warnings.filterwarnings("ignore", "Undefined Costes", RuntimeWarning)
    pairs = ("pearson", "manders_fold") if correlation is True else tuple(correlation or ())
    pixels = [im.astype(np.float64) / 65535 for im in images]
    out = {}
    for comp, lab in compartment_labels(nuclei, cells).items():
        lab = lab.astype(np.int32)
        res = {}
        for name in shape_fns:
            res.update({f"AreaShape_{k}": v for k, v in core[name](lab, None).items()})
        for c, px in enumerate(pixels):
            for name in channel_fns:
                res.update({f"{k}|{CHANNELS[c]}": v for k, v in core[name](lab, px).items()})
        for a, b in combinations(range(len(pixels)), 2) if pairs else ():
            for name in pairs:
                res.update({f"{k}|{a}{b}": v for k, v in corr[name](pixels[a], pixels[b], lab).items()})
        out[comp] = res
    return out


def _our_name(comp: str, key: str) -> str | None:
    """cellkit column of a cp_measure result key ``<feature>|<channel>`` (None: not comparable)."""
    name, _, chan = key.partition("|")
    group = name.split("_")[0]
    if group == "AreaShape":
        return f"{comp}_{name}"
    if group == "Intensity":
        return f"{comp}_{name}_{chan}"
    if group == "Granularity":  # Granularity_3|DNA
        return f"{comp}_{name}_{chan}"
    if group == "RadialDistribution" and "Zernike" in name:  # tested in tests/test_features_cp_extra.py
        return None
    if group == "RadialDistribution":  # RadialDistribution_FracAtD_1of4
        _, feature, ring = name.split("_")
        return f"{comp}_RadialDistribution_{feature}_{chan}_{ring}"
    if group == "Correlation" and chan.isdigit():  # Correlation_Pearson|01
        a, b = CHANNELS[int(chan[0])], CHANNELS[int(chan[1])]
        return {"Correlation_Pearson": f"{comp}_Correlation_Correlation_{a}_{b}",
                "Correlation_Slope": f"{comp}_Correlation_Slope_{a}_{b}",
                "Correlation_Manders_1": f"{comp}_Correlation_Manders_{a}_{b}",
                "Correlation_Manders_2": f"{comp}_Correlation_Manders_{b}_{a}",
                "Correlation_Costes_1": f"{comp}_Correlation_Costes_{a}_{b}",
                "Correlation_Costes_2": f"{comp}_Correlation_Costes_{b}_{a}"}.get(name)
    if group in TEXTURE and name.count("_") == 3:  # cp_measure: Contrast_3_00_256
        feature, scale, direction, _levels = name.split("_")
        return f"{comp}_Texture_{feature}_{chan}_{scale}_{direction}"
    return None


def agreement(ours: pd.DataFrame, ref: dict, labels: dict) -> dict[str, float]:
    """Max relative difference per feature (rows where both are defined; RadialCV of an empty ring
    is NaN here and 0 in CellProfiler and is skipped); for Zernike features, the max absolute
    difference in units of one pixel's weight 1 / (pi r^2)."""
    worst = {}
    for comp, res in ref.items():
        present = np.flatnonzero(np.bincount(labels[comp].ravel()))
        present = present[present > 0]
        for key, values in res.items():
            col = _our_name(comp, key)
            if col is None or col not in ours.columns or col.endswith(("CentralMoment_0_1", "CentralMoment_1_0")):
                continue  # (first central moments: 0 by definition; cp_measure holds round-off)
            mine = ours.loc[present, col].to_numpy(np.float64)
            theirs = np.asarray(values, dtype=np.float64)
            scale = np.maximum(np.abs(theirs), 1e-3 * np.nanmax(np.abs(theirs)) + 1e-9)  # floor: round-off of zeros
            if "Zernike" in col:
                radius = ours.loc[present, f"{comp}_AreaShape_MaxFeretDiameter"].to_numpy(np.float64) / 2
                scale = 1 / (np.pi * np.maximum(radius, 0.5) ** 2)
            rel = np.abs(mine - theirs) / scale
            worst[col] = max(worst.get(col, 0.0), float(np.nanmax(rel)) if np.isfinite(rel).any() else 0.0)
    return worst


def _timed(fn):
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def speed(n_fields: int) -> dict:
    """Per field and per group, interleaved (so that load on a shared machine hits both alike):
    cellkit's `measure_field` restricted to the group, then cp_measure's matching functions on the
    same compartments and channels; then cellkit's full set in one call (Neighbors included)."""
    fields = synthetic_fields(n_fields)
    measure_field(*fields[0], CHANNELS)  # numba compile / cache load, not timed
    n_cells = sum(len(np.unique(f[2])) - 1 for f in fields)
    ours_s = 0.0
    per_group = {g: {"cellkit_s": 0.0, "cp_measure_s": 0.0} for g in GROUP_MAP}
    worst: dict[str, float] = {}
    per_field = []
    for f in fields:
        ref: dict[str, dict] = {}
        extra = []
        for group, cp_args in GROUP_MAP.items():
            part_ours, t_ours = _timed(lambda: measure_field(*f, CHANNELS, groups=(group,)))
            if group in OPTIONAL:  # not in the full call below: compare it here
                extra.append(part_ours)
            part, t_cp = _timed(lambda: cp_measure_field(*f, **cp_args))
            per_group[group]["cellkit_s"] += t_ours
            per_group[group]["cp_measure_s"] += t_cp
            for comp, res in part.items():
                ref.setdefault(comp, {}).update(res)
        frame, t_full = _timed(lambda: measure_field(*f, CHANNELS))
        ours_s += t_full
        per_field.append({"cells": len(frame), "cellkit_full_s": t_full})
        for k, v in agreement(pd.concat([frame, *extra], axis=1), ref, compartment_labels(f[1], f[2])).items():
            worst[k] = max(worst.get(k, 0.0), v)
    for g in per_group.values():
        g["speedup"] = g["cp_measure_s"] / g["cellkit_s"]
    cp_s = sum(g["cp_measure_s"] for name, g in per_group.items() if name not in OPTIONAL)
    zernike = {k: v for k, v in worst.items() if "Zernike" in k}
    groups = {g: {k: v for k, v in worst.items() if k.split("_")[1] == g and "Zernike" not in k}
              for g in ("AreaShape", "Intensity", "Texture", "Granularity", "RadialDistribution", "Correlation")}
    groups["Costes"] = {k: v for k, v in worst.items() if "_Correlation_Costes_" in k}
    groups["Correlation"] = {k: v for k, v in groups["Correlation"].items() if k not in groups["Costes"]}
    print("group               cellkit_s  cp_measure_s  speedup")
    for g, v in per_group.items():
        print(f"{g:<19} {v['cellkit_s']:9.2f}  {v['cp_measure_s']:12.2f}  {v['speedup']:7.1f}x")
    print(f"{'all (full set)':<19} {ours_s:9.2f}  {cp_s:12.2f}  {cp_s / ours_s:7.1f}x  (default groups; Costes apart)")
    return {
        "fields": n_fields, "field_shape": [1024, 1280], "cells": int(n_cells), "features": frame.shape[1],
        "load_average_1min": os.getloadavg()[0], "per_field": per_field, "per_group": per_group,
        "cellkit_s": ours_s, "cellkit_cells_per_s": n_cells / ours_s,
        "cp_measure_core_s": cp_s, "cp_measure_core_cells_per_s": n_cells / cp_s,
        "speedup_vs_core": cp_s / ours_s,
        "agreement_features_compared": {g: len(v) for g, v in groups.items()} | {"Zernike": len(zernike)},
        "agreement_max_rel_diff": {g: max(v.values()) for g, v in groups.items() if v},
        "agreement_over_1e-3": {k: v for g in groups.values() for k, v in sorted(g.items()) if v > 1e-3},
        "zernike_max_abs_diff_in_pixel_weights": max(zernike.values()) if zernike else None,
    }


def moa_accuracy(n_moas: int, plates_per_batch: int) -> dict:
    config = SyntheticConfig(n_batches=2, plates_per_batch=plates_per_batch, compounds_per_moa=2, n_moas=n_moas,
                             n_concentrations=1, dmso_wells=4, sites=1, height=512, width=640, seed=3).validate()
    layout = plate_layout(config)
    rows = []
    t = time.perf_counter()
    for field in layout.to_dict("records"):
        images, nuclei, cells = render_layout_field(config, field)
        frame = measure_field(images, nuclei, cells, CHANNELS)
        for key in ("plate", "well", "compound", "concentration", "moa"):
            frame[key] = field[key]
        rows.append(frame)
    seconds = time.perf_counter() - t
    cells = pd.concat(rows, ignore_index=True)
    meta = ["plate", "well", "compound", "concentration", "moa"]
    feats = [c for c in cells.columns if c not in meta]
    # per-plate z-score against DMSO cells (robust: median / MAD)
    normed = []
    for _, plate in cells.groupby("plate"):
        ctrl = plate.loc[plate.compound == "DMSO", feats]
        centre = ctrl.median()
        spread = (ctrl - centre).abs().median() * 1.4826
        z = (plate[feats] - centre) / spread.where(spread > 0)
        normed.append(pd.concat([plate[meta], z], axis=1))
    normed = pd.concat(normed)
    usable = [c for c in feats if np.isfinite(normed[c]).mean() > 0.95]
    normed[usable] = normed[usable].clip(-50, 50)
    wells = normed.groupby(["plate", "well", "compound", "concentration", "moa"])[usable].mean().reset_index()
    treated = wells[wells.compound != "DMSO"]
    profiles = treated.groupby(["compound", "concentration", "moa"])[usable].mean().reset_index()
    X = profiles[usable].fillna(0).to_numpy()
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    sim = X @ X.T
    compounds = profiles.compound.to_numpy()
    sim[compounds[:, None] == compounds[None, :]] = -np.inf
    nearest = sim.argmax(1)
    correct = profiles.moa.to_numpy()[nearest] == profiles.moa.to_numpy()
    return {"moas": n_moas, "treatments": len(profiles), "wells": len(wells), "cells": len(cells),
            "features_used": len(usable), "fields": len(layout), "measure_s": seconds,
            "leave_compound_out_1nn_accuracy": float(correct.mean()), "chance": 1.0 / n_moas}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument("--moas", type=int, default=12)
    parser.add_argument("--plates-per-batch", type=int, default=1)
    parser.add_argument("--skip-moa", action="store_true")
    args = parser.parse_args()
    import numba

    result = {"speed_and_agreement": speed(args.fields)}
    print(json.dumps(result, indent=2))
    if not args.skip_moa:
        result["moa"] = moa_accuracy(args.moas, args.plates_per_batch)
        print(json.dumps(result["moa"], indent=2))
    from importlib.metadata import version
    result["versions"] = {"cp_measure": version("cp_measure"), "numba": numba.__version__, "numpy": np.__version__,
                          "python": platform.python_version()}
    out = Path(__file__).parent / "results" / "features.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
