"""The profile recipe: one path from cells to scored treatments, shared by ``cellkit profile``,
``cellkit evaluate``, the demo and the benchmarks.

`profile_cells`: cells -> wells (`ck.tl.aggregate`, out of core) -> `prepare_profiles` -> treatments.
`prepare_profiles`: wells -> (normalize, select, spherize, PCA, unit length) -> treatments.
`evaluate_profiles`: treatments -> NSC / NSCB / mAP / LOCO, ``moa_accuracy.csv``, tables, figures.
`demo_profiles`: cells.h5ad -> wells, treatments, scores, clusters and figures.
The steps come from one of `PRESETS` (``DEFAULT`` unless asked), options overriding single steps (`recipe`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .. import pp, tl
from .._logging import get_logger
from ..get import control_mask

logger = get_logger(__name__)

CONTROL = "compound == 'DMSO'"
TREATMENT = ("compound", "concentration")

# What `cellkit profile`, `cellkit evaluate` and the demo do without options, chosen by nested validation on
# the Ljosa BBBC021 per-well means (benchmarks/profiles_nested.py; docs/profiles.md): among 14,400 pipelines, the
# rule "flat": no one-step change of any hyperparameter may cost more than 3 points NSC, and among those the
# largest worst case of (NSC + NSCB) / 2 over the pipeline and its one-step neighbours (a flat optimum, not a peak).
# Per-plate normalization against the controls by interquartile mean / IQR, clipped at 9; feature selection
# (blocklist, NaN > 5 %, variance, correlation > 0.9), remaining NaN imputed; ZCA spherize on the controls,
# epsilon 3 x the mean eigenvalue; PCA of the spherized wells to 100 components; wells scaled to unit length;
# treatment = mean of wells.
DEFAULT = dict(normalize="iqm", clip=9.0, select=True, spherize="zca", epsilon=3.0, n_comps=100, l2=True,
               treatment_func="mean")
# The same rule on the grid without the PCA step and clip 3 (2,520 pipelines; the default before): iqm clip 4,
# ZCA-cor eps 1, wells not rescaled, median; Ljosa NSCB 79.3 %.
NOPCA = dict(normalize="iqm", clip=4.0, select=True, spherize="zca-cor", epsilon=1.0, n_comps=None, l2=False,
             treatment_func="median")
# The default before that (iqm clip 9, ZCA-cor eps 3, unit wells, mean): the best mean over its neighbourhood, but
# one step (iqm -> zscore) cost 4.8 points NSC on Ljosa.
PREVIOUS = dict(normalize="iqm", clip=9.0, select=True, spherize="zca-cor", epsilon=3.0, n_comps=None, l2=True,
                treatment_func="mean")
# The earlier best on BBBC021 (robust clip 8, ZCA-cor eps 1): chosen on the same 103 treatments it is scored on,
# a sharper peak than DEFAULT (docs/profiles.md).
BEST = dict(normalize="robust", clip=8.0, select=True, spherize="zca-cor", epsilon=1.0, n_comps=None, l2=True,
            treatment_func="mean")
# Ljosa's plain pipeline: per-plate z-score against controls, treatment = mean.
PLAIN = dict(normalize="zscore", clip=None, select=False, spherize="none", epsilon=1e-6, n_comps=None, l2=False,
             treatment_func="mean")
# Score the rows as given (profiles already prepared elsewhere).
NONE = dict(normalize="none", clip=None, select=False, spherize="none", epsilon=1e-6, n_comps=None, l2=False,
            treatment_func="mean")
PRESETS = {"default": DEFAULT, "nopca": NOPCA, "previous": PREVIOUS, "plain": PLAIN, "best": BEST, "none": NONE}
# Batch / position corrections of `prepare_profiles` (``correct=``), measured in benchmarks/profiles_batch.py.
CORRECTIONS = ("none", "position", "combat", "tvn-batch", "harmony")


def profile_rep(use_rep: str | None = None, correct: str = "none", n_comps: int | None = None) -> str | None:
    """Where `prepare_profiles` leaves the prepared well profiles: ``obsm["X_harmony"]`` after Harmony,
    the recipe's PCA (``"X_profile_pca"``, or ``use_rep + "_profile_pca"``; not scanpy's ``X_pca``, which
    ``sc.pp.pca`` overwrites) with ``n_comps``, else ``use_rep``."""
    if correct == "harmony":
        return "X_harmony"
    if n_comps is not None:
        return "X_profile_pca" if use_rep is None else f"{use_rep}_profile_pca"
    return use_rep


def recipe(preset: str = "default", **overrides) -> dict:
    """The steps of ``preset`` (a key of `PRESETS`) with the ``overrides`` that are not None.

    Returns keyword arguments for `prepare_profiles` / `profile_cells`. Raises ValueError naming
    the presets for an unknown one.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    return {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}


def prepare_profiles(wells: ad.AnnData, *, control: str = CONTROL, normalize: str = "none",
                     plate: str = "plate", clip: float | None = None, select: bool | Sequence[str] = False,
                     nan_cutoff: float = 0.05, spherize: str = "none", epsilon: float = 1e-6, l2: bool = False,
                     use_rep: str | None = None, treatment: Sequence[str] = TREATMENT,
                     treatment_func: str = "mean", correct: str = "none", batch: str = "batch",
                     well: str = "well", n_comps: int | None = None) -> ad.AnnData:
    """Well profiles -> treatment profiles (a new AnnData; ``wells`` is not modified).

    Steps, each optional (`DEFAULT` / `recipe` give the validated choice):

    1. `ck.pp.normalize` per ``plate`` against ``control`` (``normalize``: ``"zscore"``, ``"robust"``,
       ``"iqm"``), clipped to ``[-clip, clip]``;
    2. ``correct="position"``: `ck.pp.position_correct` (row/column median polish over all plates);
    3. `ck.pp.feature_select` (X only; ``select``: True for its default operations or the operations
       to run, with ``nan_cutoff``), then `ck.pp.impute` on X (NaN left -> median of the plate's
       control rows, or of all its rows without normalization; counts in ``obs/var["n_imputed"]``);
    4. ``correct="combat"``: `ck.pp.combat` on ``obs[batch]``;
    5. `ck.pp.spherize` on the controls (per ``batch`` when ``correct="tvn-batch"``);
    6. ``n_comps``: `ck.pp.pca` of the spherized wells (scanpy, seeded; ``n_comps`` clamped to
       ``min(wells, features) - 1``) -> ``obsm["X_profile_pca"]`` (`profile_rep`); the next steps use that key;
    7. ``correct="harmony"``: `ck.pp.harmony` on ``obs[batch]`` of that PCA (without ``n_comps``: of a
       50-component PCA) -> ``obsm["X_harmony"]``; the next steps use that key;
    8. `ck.pp.l2_normalize` (``l2``), then `ck.tl.aggregate` by ``treatment`` with ``treatment_func``
       (treatments' X = the representation used, `profile_rep`; empty ``treatment``: return the wells).

    Parameters of each step are recorded in ``uns["cellkit"]``.
    """
    if correct not in CORRECTIONS:
        raise ValueError(f"correct must be one of {list(CORRECTIONS)}, got {correct!r}")
    wells = wells.copy()
    if normalize != "none":
        pp.normalize(wells, control=control, by=plate, method=normalize, clip=clip, use_rep=use_rep)
    if correct == "position":
        pp.position_correct(wells, well=well, use_rep=use_rep)
    if select and use_rep is None:
        operations = {} if select is True else {"operations": tuple(select)}
        pp.feature_select(wells, nan_cutoff=nan_cutoff, **operations)
    if use_rep is None:
        pp.impute(wells, by=plate, control=control if normalize != "none" else None)
    if correct == "combat":
        pp.combat(wells, key=batch)
    if spherize != "none":
        pp.spherize(wells, control=control, method=spherize, epsilon=epsilon, use_rep=use_rep,
                    by=batch if correct == "tvn-batch" else None)
    if n_comps is not None:
        key = profile_rep(use_rep, n_comps=n_comps)
        pp.pca(wells, n_comps=n_comps, use_rep=use_rep, key_added=key)
        use_rep = key
    if correct == "harmony":
        pp.harmony(wells, key=batch, n_comps=50, use_rep=use_rep)
    use_rep = profile_rep(use_rep, correct)
    if l2:
        pp.l2_normalize(wells, use_rep=use_rep)
    if not treatment:
        return wells
    treatments = tl.aggregate(wells, by=list(treatment), func=treatment_func, use_rep=use_rep)
    treatments.uns["cellkit"] = {**wells.uns.get("cellkit", {}), **treatments.uns["cellkit"]}
    return treatments


def processed_by_cellkit(adata: ad.AnnData) -> list[str]:
    """The profile steps already recorded in ``uns["cellkit"]`` (normalize, spherize, ...): non-empty for
    the output of `cellkit profile`, which `cellkit evaluate` then scores as is."""
    done = adata.uns.get("cellkit")
    done = done if isinstance(done, dict) else {}
    return [k for k in ("normalize", "feature_select", "spherize", "pca", "l2_normalize", "combat", "harmony")
            if k in done]


def recorded_treatment_func(adata: ad.AnnData) -> str:
    """The wells -> treatment aggregation recorded by `profile_cells` (``uns["cellkit"]["treatments"]["func"]``),
    else `DEFAULT`'s."""
    recorded = _recorded_treatments(adata)
    return str(recorded["func"]) if "func" in recorded else DEFAULT["treatment_func"]


def recorded_rep(adata: ad.AnnData) -> str | None:
    """Where `profile_cells` left the prepared wells (``uns["cellkit"]["treatments"]["use_rep"]``: an obsm
    key such as ``"X_profile_pca"``), None for X, when nothing is recorded or when ``adata`` lacks that key (treatment
    profiles, whose X is that representation)."""
    rep = _recorded_treatments(adata).get("use_rep")
    return str(rep) if rep not in (None, "", "X") and str(rep) in adata.obsm else None


def _recorded_treatments(adata: ad.AnnData) -> dict:
    done = adata.uns.get("cellkit")
    recorded = done.get("treatments") if isinstance(done, dict) else None
    return recorded if isinstance(recorded, dict) else {}


def json_ready(value):
    """``value`` with NaN / inf floats as None and numpy scalars as Python ones (valid JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def profile_cells(cells: ad.AnnData | str | os.PathLike, *, by: Sequence[str] = ("plate", "well"),
                  func: str = "mean", use_rep: str | None = None, chunk_size: int = 25_000,
                  treatment: Sequence[str] | None = TREATMENT, duplicates: str = "error",
                  **steps) -> tuple[ad.AnnData, ad.AnnData | None]:
    """Cells -> prepared well profiles and treatment profiles, the one recipe.

    ``cells``: an AnnData or the path of an ``.h5ad`` / AnnData ``.zarr`` (read ``chunk_size`` rows
    at a time). Wells = `ck.tl.aggregate` of ``X`` or ``obsm[use_rep]`` by ``by`` (``func``; a cell id
    seen twice is an error unless ``duplicates="drop"``), so the
    wells' ``X`` holds that representation; then the ``steps`` of `prepare_profiles` (default
    `DEFAULT`, see `recipe`) on the wells. Treatments (None when ``treatment`` is empty) =
    ``treatment_func`` of the prepared wells by ``treatment``. Returns ``(wells, treatments)``.
    """
    steps = {**DEFAULT, **steps}
    treatment_func = steps.pop("treatment_func")
    wells = tl.aggregate(cells, by=list(by), func=func, use_rep=use_rep, chunk_size=chunk_size,
                         duplicates=duplicates)
    _record_upstream(wells, cells, dict(by=list(by), func=func, use_rep=use_rep, steps=steps))
    wells = prepare_profiles(wells, treatment=(), **steps)
    rep = profile_rep(None, steps.get("correct", "none"), steps.get("n_comps"))
    # how these wells become treatments, so that scoring them later (`cellkit evaluate`) does the same
    wells.uns.setdefault("cellkit", {})["treatments"] = {"by": list(treatment or TREATMENT), "func": treatment_func,
                                                         "use_rep": rep or "X"}
    if not treatment:
        return wells, None
    treatments = tl.aggregate(wells, by=list(treatment), func=treatment_func, use_rep=rep)
    treatments.uns["cellkit"] = {**wells.uns.get("cellkit", {}), **treatments.uns["cellkit"]}
    return wells, treatments


def evaluate_profiles(profiles: ad.AnnData, out_dir: str | os.PathLike | None = None, *, label: str = "moa",
                      compound: str = "compound", batch: str | None = "batch",
                      control: str | None = "compound == 'DMSO'", use_rep: str | None = None,
                      figures: bool = True) -> dict:
    """Score profiles against labels; write results under ``out_dir`` when given.

    Files: ``moa_accuracy.csv`` (one row per profile: neighbours, predictions, correctness for
    NSC and NSCB), ``per_moa_accuracy.csv``, ``confusion_nsc.csv``, ``average_precision.csv``,
    ``loco.csv``, ``scores.json`` (valid JSON: undefined scores are null) and, with ``figures``, ``confusion_nsc.png``,
    ``moa_distribution.png`` and ``umap_profiles.png``. Returns the summary dict (NSC, NSCB, counts, exclusions, mAP, LOCO).
    """
    profiles = profiles[~control_mask(profiles, control, require=False)].copy()
    scores = tl.moa_accuracy(profiles, label=label, compound=compound, batch=batch, use_rep=use_rep, key_added=None)
    ap = tl.mean_average_precision(profiles, label=label, compound=compound, use_rep=use_rep, key_added=None)
    loco = tl.loco_classification(profiles, label=label, compound=compound, use_rep=use_rep, key_added=None)
    map_score, ap_table, loco_table = ap.score, ap.table, loco.table
    summary = json_ready({**scores.summary(), "mAP": map_score, "LOCO": loco.score, "n_profiles": int(profiles.n_obs),
                          "n_labels": int(profiles.obs[label].nunique())})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        scores.table.to_csv(out / "moa_accuracy.csv", index_label="profile")
        per_label = scores.per_label("nsc").add_prefix("nsc_")
        if batch is not None:
            per_label = per_label.join(scores.per_label("nscb").add_prefix("nscb_"), how="left")
        per_label.join(ap_table.groupby("label")["average_precision"].mean().rename("mAP")).to_csv(
            out / "per_moa_accuracy.csv", index_label=label)
        scores.confusion("nsc").to_csv(out / "confusion_nsc.csv")
        ap_table.to_csv(out / "average_precision.csv", index_label="profile")
        loco_table.to_csv(out / "loco.csv", index_label="profile")
        (out / "scores.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
        if figures:
            from .. import pl
            import matplotlib.pyplot as plt

            embedded = profiles.copy()
            tl.cluster(embedded, use_rep=use_rep, n_pcs=min(30, embedded.n_vars - 1, embedded.n_obs - 2),
                       n_neighbors=min(15, embedded.n_obs - 1))
            for fig in (pl.confusion_matrix(scores.confusion("nsc"), title=f"NSC confusion ({100 * scores.nsc:.1f}%)",
                                            save=out / "confusion_nsc.png"),
                        pl.moa_distribution(profiles, label=label, save=out / "moa_distribution.png"),
                        pl.umap(embedded, color=[c for c in (label, compound, batch) if c in embedded.obs],
                                save=out / "umap_profiles.png")):
                plt.close(fig)
    return summary


def demo_profiles(cells_h5ad: str | os.PathLike, out_dir: str | os.PathLike, *, cells_zarr=None,
                  max_cluster_cells: int = 5000, seed: int = 0) -> dict[str, Path]:
    """The demo's profiling stage: cells.h5ad -> wells, treatments, scores, clusters, figures.

    Writes under ``out_dir``: ``wells.h5ad``,
    ``treatments.h5ad`` (`profile_cells` with `DEFAULT`), ``evaluation/`` (see `evaluate_profiles`), ``cells_clustered.h5ad`` (up
    to ``max_cluster_cells`` cells, seeded sample, with Leiden clusters and UMAP),
    ``markers.csv`` and ``figures/`` (UMAPs, counts, concentrations, channels, example cells when
    ``cells_zarr`` is given). Returns name -> path.
    """
    import matplotlib.pyplot as plt

    from .. import pl
    from .._atomic import atomic_path

    out = Path(out_dir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    all_cells = ad.read_h5ad(cells_h5ad)  # read once: wells, clusters, channel figure and representations
    wells, treatments = profile_cells(all_cells)
    with atomic_path(out / "wells.h5ad") as tmp:
        wells.write_h5ad(tmp)
    with atomic_path(out / "treatments.h5ad") as tmp:
        treatments.write_h5ad(tmp)
    summary = evaluate_profiles(treatments, out / "evaluation")
    logger.info(f"profiles: {wells.n_obs} wells, {treatments.n_obs} treatments; NSC {100 * summary['NSC']:.1f}%, "
        f"NSCB {100 * (summary['NSCB'] or float('nan')):.1f}%, mAP {summary['mAP']:.3f}")

    cells = all_cells.copy()  # clustering adds X_pca / X_umap: not representations to compare
    if cells.n_obs > max_cluster_cells:
        rng = np.random.default_rng(seed)
        cells = cells[np.sort(rng.choice(cells.n_obs, max_cluster_cells, replace=False))].copy()
    pp.normalize(cells, control="compound == 'DMSO'", by="plate", method="zscore", clip=10)
    tl.cluster(cells, random_state=seed)
    markers = tl.marker_features(cells, groupby="leiden")
    markers.to_csv(out / "markers.csv", index=False)
    with atomic_path(out / "cells_clustered.h5ad") as tmp:
        cells.write_h5ad(tmp)
    made = [pl.umap(cells, color=[c for c in ("moa", "compound", "plate", "leiden") if c in cells.obs],
                    save=figs / "umap_cells.png"),
            pl.moa_distribution(cells, save=figs / "moa_distribution_cells.png"),
            pl.compound_counts(cells, save=figs / "compound_counts.png"),
            pl.concentration_histogram(wells, save=figs / "concentration_histogram.png")]
    channels = [v.rsplit("_", 1)[1] for v in cells.var_names if v.startswith("Cells_Intensity_MeanIntensity_")]
    if channels:
        made.append(pl.channel_comparison(all_cells, channels=channels,
                                          save=figs / "channel_comparison.png"))
    if cells_zarr is not None:
        made.append(pl.example_cells(cells_zarr, groupby="moa", save=figs / "example_cells_moa.png"))
    for fig in made:
        plt.close(fig)
    logger.info(f"profiles: {cells.obs['leiden'].nunique()} Leiden clusters on {cells.n_obs} cells; figures in {figs}")
    table = compare_representations(all_cells, scored={"X": _scores_row(summary, wells)})
    table.to_csv(out / "representations.csv")
    logger.info("profiles: MOA accuracy by representation\n" + table.round(3).to_string())
    return {"wells": out / "wells.h5ad", "treatments": out / "treatments.h5ad",
            "evaluation": out / "evaluation", "cells_clustered": out / "cells_clustered.h5ad",
            "markers": out / "markers.csv", "figures": figs, "representations": out / "representations.csv"}


def _scores_row(summary: dict, wells: ad.AnnData) -> dict:
    return {"NSC": summary["NSC"], "NSCB": summary["NSCB"], "mAP": summary["mAP"], "n_features": wells.n_vars,
            "n_treatments": summary["n_profiles"]}


def compare_representations(cells: ad.AnnData | str | os.PathLike, *, control: str = CONTROL,
                            scored: dict | None = None, **steps) -> pd.DataFrame:
    """NSC, NSCB and mAP of treatment profiles from each representation of the cells.

    For ``X`` (morphology) and every ``obsm["X_*"]`` (embeddings) of ``cells`` (an AnnData or an
    ``.h5ad`` path): `profile_cells` (the `DEFAULT` recipe, ``steps`` overriding it) -> scores.
    ``scored``: rows already computed (representation -> row), not computed again. Returns one
    row per representation (index ``X`` or the obsm key) with NSC, NSCB, mAP, n_features, n_treatments.
    """
    if isinstance(cells, ad.AnnData):
        keys = list(cells.obsm.keys())
    else:
        backed = ad.read_h5ad(cells, backed="r")
        keys = list(backed.obsm.keys())
        backed.file.close()
    scored, rows = scored or {}, {}
    for rep in ["X"] + sorted(k for k in keys if k.startswith("X_")):
        if rep in scored:
            rows[rep] = scored[rep]
            continue
        wells, treatments = profile_cells(cells, use_rep=None if rep == "X" else rep, control=control, **steps)
        rows[rep] = _scores_row(evaluate_profiles(treatments, control=control, figures=False), wells)
    return pd.DataFrame.from_dict(rows, orient="index")


def _record_upstream(wells: ad.AnnData, cells, parameters: dict) -> None:
    """Wells made from a cells file record its fingerprint (`cellkit.io.provenance`), so that readers
    refuse them once that file is replaced."""
    from ..io.provenance import derive_fingerprint, lineage, read_cellkit_uns

    if isinstance(cells, ad.AnnData):
        return
    source = read_cellkit_uns(cells) or {}
    if source.get("fingerprint"):
        info = wells.uns.setdefault("cellkit", {})
        info["upstream"] = {f"{k}": entry for k, entry in enumerate(
            [{"path": str(Path(cells).resolve()), "kind": "anndata", "fingerprint": source["fingerprint"]},
             *lineage(source)])}
        info["fingerprint"] = derive_fingerprint(source["fingerprint"], parameters)
