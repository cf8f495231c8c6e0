"""Representations that carry MOA: morphology, PCA, random-init, SimCLR, BYOL, MAE, combined, weak, on synthetic plates.

Generates its own synthetic plate set from ``--seed`` (12 MOAs x 4 compounds x 2 concentrations,
2 batches x 3 plates, 4 DMSO wells per plate, batch effects on; each MOA has two compounds in each
batch, so NSC can find a same-batch sibling and NSCB must cross batches; sites per well chosen so
that about ``--cells`` cells come out), extracts ground-truth-segmented cells into 96 px crops with
morphology, trains every method for at most ``--budget-minutes`` of CPU time each (a short throughput
probe, then one real warm-up epoch, after which the epoch count is re-planned from that epoch's CPU time: see
`train_within`; all counted in the budget), embeds all cells (every ResNet encoder both with its own
``embed_pool`` and with the other one: rows ``<method>-stages`` / ``<method>-last``), and runs the same
profile pipelines on every representation:

- ``plain``: the default recipe (`cellkit.workflows.profiles.DEFAULT`, whatever it is at run time; since
  e283dd5: per-plate iqm normalization vs DMSO, clip 9, feature selection, ZCA on DMSO, PCA 100, unit-length
  wells, mean; before it, what is now ``NOPCA``);
- ``corrected``: the profile helper's BEST options (`cellkit.workflows.profiles.BEST`: robust
  per-plate normalization vs DMSO, clip 8, ZCA-cor sphering on the DMSO wells (TVN), unit-length
  wells) - the same functions, for embeddings as for morphology.

Rows: morphology (X), pca, random (untrained encoder), simclr (since session 10 the cells of a well are each
other's positives, contrasted within the plate), simclr-instance (only when asked for in ``--methods``: SimCLR with
the two views of a cell alone, `VARIANTS`), byol, mae, weak (treatment labels: the compound, never the MOA;
`--method weak`'s defaults), weak-jitter (only when asked for: weak supervision with the base augmentation and the
store's global statistics, its default up to session 11), combined (morphology + weak-supervision well profiles,
each prepared by the whole pipeline, morphology's kept as they are, the embedding's scaled to morphology's well
length times its weight in ``COMBINED``, chosen on the tuning seeds; ``--combined`` changes them, e.g.
``X:1,X_simclr:0.5``, the earlier choice on seed 1), and its control morphology-std (morphology alone through that
same combination: equal to morphology by construction). Scores: treatment NSC, NSCB (cosine 1-NN, not-same-compound
/ -batch), mAP.
Training settings: the ``cpu-small`` preset (views sized from the cells) with each method's defaults
(SimCLR / BYOL, and weak since session 12: ``SSL_AUGMENT``, whose one intensity factor for all channels was chosen
on seeds 3 and 5 in session 7, and stage pooling, chosen on seed 3 in session 6; docs/models.md).

Usage: OMP_NUM_THREADS=1 python benchmarks/ssl_moa.py --seed S --budget-minutes M [--cells N] [--threads 1]
Writes ``benchmarks/results/ssl_moa_seed<S>.json`` (or ``--json``). Finished steps in ``--out`` are reused.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

import cellkit
from cellkit import pp
from cellkit.datasets import SyntheticConfig, synthetic_index, write_ground_truth_labels, write_synthetic_plate
from cellkit.models import EMBEDDING_KEYS, embed_h5ad, train
from cellkit import tl
from cellkit.workflows.profiles import (BEST, DEFAULT, TREATMENT, compare_representations, evaluate_profiles,
                                       profile_cells, recorded_rep)

METHODS = ("pca", "random", "simclr", "byol", "mae", "weak")
CELLS_PER_FIELD = 21.0  # about, at 512 x 640 (seed 7: 6,755 cells from 312 fields; 96 px crops, border cells dropped)
# Chosen on seeds 3 and 5 (session 6; combined_scores' "norm" construction, weak supcon within the batch at 5 min):
# X_weak weight 0.25 / 0.5 / 0.75 / 1, mean plain NSC 0.985 / 0.995 / 0.990 / 0.990 (a tie within one treatment),
# mean plain mAP 0.782 / 0.789 / 0.779 / 0.754 -> 0.5. Before: 0.25 (session 5, seed 3, the "zscore" construction);
# X + 0.5 X_simclr (seed 1).
COMBINED = {"X": 1.0, "X_weak": 0.5}
RESNET_METHODS = ("random", "simclr", "byol", "weak")  # encoders with ResNet stages (embed_pool "last" or "stages")
OTHER_POOL = {"last": "stages", "stages": "last"}
# Rows that train a method with other options: row name -> (method, options); obsm key X_<name, '-' as '_'>.
VARIANTS = {"simclr-instance": ("simclr", {"positive_by": None, "contrast_within": None}),  # the two views alone
            # weak supervision on the base augmentation (per-channel jitter) and the store's global statistics:
            # its default up to session 11
            "weak-jitter": ("weak", {"augment": {"crop_scale": (0.5, 1.0), "brightness": 0.2, "contrast": 0.2,
                                                 "intensity_scale": 0.0}, "norm_by": None})}


def plate_config(seed: int, cells: int) -> SyntheticConfig:
    base = SyntheticConfig(n_batches=2, plates_per_batch=3, compounds_per_moa=4, n_concentrations=2, seed=seed)
    wells = base.n_batches * base.plates_per_batch * (base.dmso_wells + base.n_moas * base.compounds_per_moa
                                                      * base.n_concentrations // base.n_batches)
    per_site = wells * CELLS_PER_FIELD
    if cells >= per_site:
        return SyntheticConfig(**{**vars(base), "sites": math.ceil(cells / per_site)})
    scale = math.sqrt(cells / per_site)  # fewer cells than one site gives: smaller fields
    return SyntheticConfig(**{**vars(base), "height": max(192, 16 * round(base.height * scale / 16)),
                              "width": max(240, 16 * round(base.width * scale / 16))})


def build_cells(out: Path, config: SyntheticConfig, size: int) -> tuple[Path, Path]:
    from cellkit.extract import extract_cells
    from cellkit.features import measure_field

    plate, labels, cells, h5ad = out / "plate", out / "labels.zarr", out / "cells.zarr", out / "cells.h5ad"
    if not (plate / "synthetic.json").exists():
        write_synthetic_plate(plate, config, workers=1)
    if not labels.exists():
        write_ground_truth_labels(plate, labels)
    if not h5ad.exists():
        result = extract_cells(synthetic_index(plate), labels, cells, size=size, border="drop", measure=measure_field,
                               workers=1, adata=h5ad)
        h5ad = Path(result.adata or h5ad)
    return cells, h5ad


TIMING_KEYS = ("budget_s", "train_cpu_s", "train_s", "probe_s", "crops_per_s", "epochs")


def row_method(name: str) -> tuple[str, dict, str]:
    """The method, its extra training options and the obsm key of the benchmark row ``name`` (a method or one
    of `VARIANTS`)."""
    if name in VARIANTS:
        return (*VARIANTS[name], "X_" + name.replace("-", "_"))
    return name, {}, EMBEDDING_KEYS[name]


def train_within(cells: Path, model_dir: Path, method: str, budget_s: float, n_cells: int, options: dict,
                 log=print) -> dict:
    """Train ``method`` for at most about ``budget_s`` seconds of this process's CPU time (the issue's
    CPU-minutes: other processes on a shared machine do not shrink or stretch the budget; sessions 5-6 planned
    on wall time, and the load moved their epochs from 9 to 36 per 5 minutes). A probe on 16 batches measures
    the CPU cost per cell; when fewer than 2 epochs fit, the epochs (or cells) follow from it. Otherwise the
    model trains one real epoch (a linear lr warm-up, ``warmup_epochs=1``, which does not depend on the epoch
    count), the epoch count is re-planned from that epoch's CPU time and what is left of the budget, and
    training resumes to it: the weights are those of ``train`` with that epoch count from the start. Returns
    timing facts (also in ``timing.json``; ``*_s`` are wall seconds, ``*_cpu_s`` CPU seconds)."""
    done = model_dir / "config.json"
    if done.exists() and json.loads(done.read_text()).get("complete"):
        return json.loads((model_dir / "timing.json").read_text())
    start, start_cpu = time.perf_counter(), time.process_time()
    plan = {"epochs": 1}
    replan = None
    if method not in ("pca", "random"):
        probe = model_dir.parent / f".probe_{model_dir.name}"
        batch = options.get("batch_size", 128)
        # 16 batches (a few seconds): 4 were too few to average out a shared machine's load (session 5)
        train(cells, probe, method=method, overwrite=True,
              config={**options, "epochs": 1, "max_cells": min(16 * batch, n_cells)})
        history = json.loads((probe / "config.json").read_text())["history"][-1]
        rate = history["cells_per_s"] * history["seconds"] / history["cpu_seconds"]  # cells per CPU second
        left = budget_s - (time.process_time() - start_cpu)
        epochs = int(left * rate // n_cells)
        plan = {"epochs": max(1, epochs)} if epochs >= 1 else {"epochs": 1, "max_cells": max(batch, int(left * rate))}
        replan = epochs >= 2
    probe_s = time.perf_counter() - start
    if replan:
        options = {**options, "warmup_epochs": 1}
        train(cells, model_dir, method=method, overwrite=True, config={**options, "epochs": 1})
        first_cpu_s = json.loads(done.read_text())["history"][0]["cpu_seconds"]  # the epoch, not the setup
        left = budget_s - (time.process_time() - start_cpu)
        epochs = 1 + max(0, int(left // first_cpu_s))
        plan = {"epochs": epochs, "probe_epochs": plan["epochs"], "first_epoch_cpu_s": first_cpu_s}
        if epochs > 1:
            train(cells, model_dir, method=method, resume=True, config={"epochs": epochs})
    else:
        train(cells, model_dir, method=method, overwrite=True, config={**options, **plan})
    saved = json.loads(done.read_text())
    train_s = sum(h["seconds"] for h in saved["history"]) if saved["history"] else 0.0
    train_cpu_s = sum(h.get("cpu_seconds", 0.0) for h in saved["history"])
    timing = {"budget_s": budget_s, "clock": "cpu", "probe_s": probe_s, "train_s": train_s,
              "train_cpu_s": train_cpu_s, "wall_s": time.perf_counter() - start,
              "cpu_s": time.process_time() - start_cpu, **plan,
              "n_train_cells": saved["n_train_cells"],
              "crops_per_s": (float(np.mean([h["cells_per_s"] for h in saved["history"]]))
                              if saved["history"] else None)}
    (model_dir / "timing.json").write_text(json.dumps(timing))
    return timing


def embedding_source(sha256, norm_by) -> str:
    """What an embedding comes from: the model's weights and its input's per-plate normalization (`norm_by`)."""
    return f"{sha256} norm_by={','.join(str(c) for c in (norm_by if norm_by is not None else []))}"


def embedded_weights(h5ad: Path) -> dict:
    """``{obsm key: embedding_source}`` of the embeddings already in ``h5ad`` (as `embed_h5ad` records them in
    ``uns["cellkit"]["embeddings"]``): an embedding is reused only when it came from the same weights and input
    (a model retrained in ``--out`` is embedded again)."""
    recorded = ad.read_h5ad(h5ad, backed="r").uns.get("cellkit", {}).get("embeddings", {})
    return {key: embedding_source(info.get("weights_sha256"), info.get("norm_by")) for key, info in recorded.items()}


def embed_model(cells: Path, model_dir: Path, h5ad: Path, name: str, present: dict, both_pools: bool) -> dict:
    """Embed the model of row ``name`` (`row_method`) in ``model_dir`` into ``h5ad``: with its own ``embed_pool``
    as the row's obsm key and, for a ResNet encoder with ``both_pools``, with the other pooling as
    ``<key>_<other pool>``. An embedding that ``present`` (`embedded_weights`, updated here) shows was made from
    the same weights is not made again. Returns ``{row name: (obsm key, pool)}``: ``name`` and, with the other
    pooling, ``<name>-<other pool>``."""
    saved = json.loads((model_dir / "config.json").read_text())
    pool, key = saved.get("embed_pool", "last"), row_method(name)[2]
    rows = {name: (key, pool)}
    if saved["method"] in RESNET_METHODS and both_pools:
        other = OTHER_POOL[pool]
        rows[f"{name}-{other}"] = (f"{key}_{other}", other)
    source = embedding_source(saved["weights_sha256"], saved.get("norm_by"))
    for key, row_pool in rows.values():
        if present.get(key) != source:  # absent, or another model's embedding
            embed_h5ad(cells, model_dir, h5ad, key_added=key, pool=row_pool)
            present[key] = source
    return rows


def combined_scores(h5ad: Path, weights: dict, steps: dict, scale: str = "norm") -> dict:
    """The combined row: each representation's wells prepared by ``steps``, then `ck.pp.combine` of the prepared
    wells, treatments by the recipe's ``treatment_func``, scores.

    ``scale="norm"`` (the row since session 6): every step of the recipe (PCA, unit-length wells included) on each
    representation, morphology's prepared wells kept as they are, each other block scaled to morphology's mean
    well length times its weight, so that weight -> 0 gives exactly morphology's row. ``scale="zscore"`` (session
    5): the prepared wells before the recipe's PCA step, each feature standardized over the wells (this alone cost
    morphology 0.021 NSC on seed 7: morphology-std 0.979 vs 1.000)."""
    treatment_func = steps.get("treatment_func", "mean")
    if scale == "zscore":
        steps = {**steps, "n_comps": None}
    wells = {rep: profile_cells(h5ad, use_rep=None if rep == "X" else rep, treatment=(), **steps)[0]
             for rep in weights}
    base = wells["X"]
    for rep in weights:  # the prepared profiles: X, or the recorded obsm key (X_profile_pca with n_comps)
        w = wells[rep][base.obs_names]
        key = recorded_rep(w)
        base.obsm[f"{rep}_prepared"] = np.asarray(w.obsm[key] if key else w.X)
    pp.combine(base, {f"{rep}_prepared": weight for rep, weight in weights.items()}, scale=scale)
    treatments = tl.aggregate(base, by=list(TREATMENT), func=treatment_func, use_rep="X_combined")
    s = evaluate_profiles(treatments, figures=False)
    return {"NSC": s["NSC"], "NSCB": s["NSCB"], "mAP": s["mAP"], "n_treatments": s["n_profiles"],
            "n_features": int(base.obsm["X_combined"].shape[1])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--budget-minutes", type=float, required=True,
                        help="training CPU time per method (this process's CPU-minutes)")
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--crop-size", type=int, default=96)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--train-only", action="store_true",
                        help="train and embed the methods, score nothing (a later run with every method scores them)")
    parser.add_argument("--one-pool", dest="both_pools", action="store_false",
                        help="embed each ResNet encoder only with its own embed_pool (default: also with the other "
                             "pooling, as a row '<method>-last' or '<method>-stages')")
    parser.add_argument("--combined", default=",".join(f"{k}:{w}" for k, w in COMBINED.items()),
                        help="the combined row's weights, KEY:WEIGHT,... (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(f"/tmp/cellkit_ssl_moa/seed{args.seed}_cells{args.cells}")
    config = plate_config(args.seed, args.cells)
    start = time.perf_counter()
    cells, h5ad = build_cells(out, config, args.crop_size)
    n_cells = ad.read_h5ad(h5ad, backed="r").n_obs
    print(f"{n_cells} cells ready in {time.perf_counter() - start:.0f}s ({config.sites} sites per well)", flush=True)
    options = {"preset": args.preset, "seed": 0, "num_workers": 0}
    timings, pools, extra = {}, {}, {}
    present = embedded_weights(h5ad)
    for row in args.methods.split(","):
        model_dir = out / "models" / row
        method, extra_options, _ = row_method(row)
        timings[row] = train_within(cells, model_dir, method, 60 * args.budget_minutes, n_cells,
                                    {**options, **extra_options})
        print(f"{row}: {timings[row]}", flush=True)
        for name, (key, pool) in embed_model(cells, model_dir, h5ad, row, present, args.both_pools).items():
            if name == row:
                pools[row] = pool
            else:  # the other embedding of the same encoder, as its own row
                extra[key] = (name, row, pool)  # timings are by row
    if args.train_only:
        return
    names = {"X": "morphology", **{row_method(m)[2]: m for m in args.methods.split(",")},
             **{key: name for key, (name, _, _) in extra.items()}}
    trained = {name: (method, pool) for key, (name, method, pool) in extra.items()}
    trained.update({m: (m, pools[m]) for m in args.methods.split(",")})
    pipelines = {"plain": DEFAULT, "corrected": BEST}
    tables = {p: compare_representations(h5ad, **steps) for p, steps in pipelines.items()}
    rows = {}
    for key, name in names.items():
        rows[name] = {p: {k: (None if pd.isna(v) else float(v)) for k, v in t.loc[key].items()}
                      for p, t in tables.items()}
        method, pool = trained.get(name, (name, None))
        rows[name].update({k: timings.get(method, {}).get(k) for k in TIMING_KEYS}, pool=pool)
    combined = {k: float(w) for k, w in (item.split(":") for item in args.combined.split(","))}
    if all(k in present for k in combined if k != "X"):
        rows["combined"] = {p: combined_scores(h5ad, combined, steps) for p, steps in pipelines.items()}
        rows["combined"].update(dict.fromkeys(TIMING_KEYS))
        # the control for it: morphology alone through the same combination (equal to morphology by construction)
        rows["morphology-std"] = {p: combined_scores(h5ad, {"X": 1.0}, steps) for p, steps in pipelines.items()}
        rows["morphology-std"].update(dict.fromkeys(TIMING_KEYS))
    header = (f"{'representation':<15}{'budget s':>9}{'cpu s':>7}{'train s':>8}{'crops/s':>8}{'epochs':>7}"
              f" | {'plain NSC':>9}{'NSCB':>6}{'mAP':>6}")
    print("\n" + header + f" | {'corr. NSC':>9}{'NSCB':>6}{'mAP':>6}")
    for name, r in rows.items():
        t = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
        line = (f"{name:<15}{t(r.get('budget_s'), '9.0f'):>9}{t(r.get('train_cpu_s'), '7.0f'):>7}"
                f"{t(r['train_s'], '8.0f'):>8}{t(r['crops_per_s'], '8.0f'):>8}{t(r['epochs'], '7d'):>7}")
        for p in ("plain", "corrected"):
            s = r[p]
            line += f" | {s['NSC']:>9.3f}{t(s['NSCB'], '6.3f'):>6}{s['mAP']:>6.3f}"
        print(line)
    first = next(iter(rows.values()))["plain"]
    print(f"({first['n_treatments']:.0f} treatments; budget {args.budget_minutes} min per method trained in this run "
          f"(models reused from --out keep the budget they were trained with), {args.threads} thread(s); "
          f"combined = {combined})")
    result = {"seed": args.seed, "budget_minutes": args.budget_minutes, "cells": n_cells, "threads": args.threads,
              "preset": args.preset, "crop_size": args.crop_size, "synthetic": vars(config), "combined": combined,
              "pipelines": pipelines, "rows": rows,
              "versions": {"cellkit": cellkit.__version__, "torch": str(torch.__version__),
                           "python": platform.python_version()}}
    dest = args.json or Path(__file__).resolve().parent / "results" / f"ssl_moa_seed{args.seed}.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(result, indent=2, default=str))
    print(f"written {dest}")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # cellkit's log (epochs, extraction)
    main()
