"""Robustness of embeddings to imaging drift: perturb crops (`cellkit.models.perturb`), embed again,
measure what moved (cosine / L2 drift, kNN overlap, well-level NSC)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..models.perturb import PERTURBATIONS, SEVERITIES, perturb, perturb_masks


class HandcraftedEmbedder:
    """Raw crops and their masks -> handcrafted features of each crop's cell (`cellkit.features.measure_crops`).

    The segmentation is the store's (moved with the crop by a shift), so the features drift only as the
    pixels inside the masks change. A store without masks (``masks_available: False``) measures the
    whole crop. `robustness` then calls `postprocess`, which prepares the features as a profile is
    prepared: `cellkit.pp.feature_select` on the clean cells, then a z-score by the clean mean and SD.
    """

    name = "handcrafted"
    needs_masks = True

    def __init__(self, channels: Sequence[str], **options):
        self.channels, self.options = list(channels), options
        self.feature_names: list[str] | None = None

    def __call__(self, x: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
        from ..features.crops import measure_crops

        features = measure_crops(x.numpy(), masks.numpy(), self.channels, **self.options)
        self.feature_names = list(features.columns)
        return features.to_numpy(np.float32)

    def postprocess(self, conditions: dict) -> dict:
        """``{condition: (N, F) raw features}`` -> ``{condition: (N, F') float32}``: the features
        `feature_select` keeps on the clean cells and defined for all of them, z-scored by their
        clean mean and SD; a value undefined after a perturbation becomes 0 (the clean mean)."""
        import anndata as ad

        from ..pp import feature_select

        clean = conditions[("clean", 0.0)].astype(np.float64)
        selected = ad.AnnData(X=clean, var=pd.DataFrame(index=self.feature_names or map(str, range(clean.shape[1]))))
        feature_select(selected, subset=False)
        mean, sd = clean.mean(axis=0), clean.std(axis=0)
        keep = selected.var["feature_selected"].to_numpy() & np.isfinite(clean).all(axis=0) & (sd > 0)
        if not keep.any():
            raise ValueError("no handcrafted feature is defined and variable over the clean cells")
        return {c: np.nan_to_num((z[:, keep] - mean[keep]) / sd[keep], nan=0.0, posinf=0.0,
                                 neginf=0.0).astype(np.float32) for c, z in conditions.items()}


def _model_name(path, embedder, taken) -> str:
    name = getattr(embedder, "name", None) or Path(path).name
    base, k = name, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


# --------------------------------------------------------------------------- metrics


def _unit(z):
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def knn_indices(z: np.ndarray, k: int) -> np.ndarray:
    """Indices (N, k) of each row's k most cosine-similar other rows (ties: lower index first)."""
    u = _unit(z.astype(np.float64))
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")
    return order[:, :k]


def knn_overlap(clean: np.ndarray, perturbed: np.ndarray, k: int) -> np.ndarray:
    """Per row, the fraction of its k nearest neighbours (cosine) shared before and after (N,)."""
    a, b = knn_indices(clean, k), knn_indices(perturbed, k)
    return np.array([len(np.intersect1d(x, y, assume_unique=True)) / k for x, y in zip(a, b)])


def drift(clean: np.ndarray, perturbed: np.ndarray, *, spread: float) -> dict:
    """Cosine drift ``1 - cos`` and L2 drift per cell, summarized; ``spread``: mean distance between clean cells."""
    cos = 1 - np.sum(_unit(clean) * _unit(perturbed), axis=1)
    l2 = np.linalg.norm(perturbed - clean, axis=1)
    return {"cosine_drift_mean": float(cos.mean()), "cosine_drift_median": float(np.median(cos)),
            "l2_drift_mean": float(l2.mean()), "l2_drift_median": float(np.median(l2)),
            "l2_drift_rel": float(l2.mean() / spread) if spread > 0 else float("nan")}


def _spread(z: np.ndarray, seed: int) -> float:
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(z), (2, min(5000, len(z) * 4)))
    keep = i != j
    return float(np.linalg.norm(z[i[keep]] - z[j[keep]], axis=1).mean()) if keep.any() else 0.0


def well_nsc(obs: pd.DataFrame, z: np.ndarray, *, control: str = "compound == 'DMSO'", label: str = "moa",
             compound: str = "compound", plate: str = "plate", well: str = "well") -> float:
    """Well-level NSC of cell embeddings: well means, per-plate z-score against control wells, 1-NN (cosine).

    NaN when the labels or columns are missing or no well can be scored.
    """
    import anndata as ad

    from ..get import control_mask
    from ..pp import normalize
    from ._aggregate import aggregate
    from ._moa import moa_accuracy

    needed = [c for c in (label, compound, plate, well) if c not in obs]
    if needed or obs[label].isna().all():
        return float("nan")
    table = obs.reset_index(drop=True)
    table.index = table.index.astype(str)
    cells = ad.AnnData(obs=table)
    cells.obsm["X_emb"] = z.astype(np.float32)
    try:
        with warnings.catch_warnings():  # constant embedding dimensions in the control wells of a plate
            warnings.simplefilter("ignore", RuntimeWarning)
            wells = aggregate(cells, by=(plate, well), use_rep="X_emb")  # well means in X
            normalize(wells, control=control, by=plate, method="zscore")
        keep = ~control_mask(wells, control, require=False) & wells.obs[label].notna().to_numpy()
        wells = wells[keep].copy()
        wells.X = np.nan_to_num(wells.X)
        return float(moa_accuracy(wells, label=label, compound=compound, batch=None, key_added=None).nsc)
    except (KeyError, ValueError):
        return float("nan")


# --------------------------------------------------------------------------- the experiment


@dataclass
class RobustnessResult:
    """What `robustness` measured.

    table : one row per (model, perturbation, severity), including severity 0 (clean) rows:
        cosine/L2 drift (mean, median, L2 relative to the mean distance between clean cells),
        ``knn_overlap`` (mean over cells), ``nsc`` / ``delta_nsc`` (well-level, when labels exist).
    obs : the evaluated cells' obs (store order subset), index = cell_id.
    embeddings : ``{model: {(perturbation, severity): (N, D) float32}}``; ``("clean", 0.0)`` = unperturbed.
    params : the options used.
    """

    table: pd.DataFrame
    obs: pd.DataFrame
    embeddings: dict = field(repr=False)
    params: dict = field(default_factory=dict)


def robustness(cells: str | os.PathLike, models: Sequence | Mapping, *,
               perturbations: Mapping[str, Sequence[float]] | Sequence[str] | None = None, max_cells: int = 1000,
               k: int = 10, seed: int = 0, batch_size: int = 128, control: str = "compound == 'DMSO'",
               label: str = "moa", device: str = "cpu", hf_options: dict | None = None,
               groupby: str | None = None, progress=None) -> RobustnessResult:
    """Embedding drift of each model under perturbations of increasing severity.

    Parameters
    ----------
    cells : a complete cells.zarr.
    models : model folders (``cellkit train``), ``"hf:NAME_OR_PATH"`` ViT-MAEs (`cellkit.models.hf`,
        options in ``hf_options``), ``"handcrafted"`` (`HandcraftedEmbedder`: CellProfiler-style
        features of each crop's cell), or a mapping name -> one of those or -> a callable
        ``f(raw crops (B, C, S, S) float32 tensor) -> (B, D) array``.
    perturbations : names (default severities from `SEVERITIES`) or name -> severities; default all.
    max_cells : cells evaluated (a seeded random sample, kept in store order).
    k : neighbours for the kNN overlap.
    control, label : obs query of control cells and the label column for the well-level NSC.
    groupby : obs column (e.g. ``field_id`` of a store of image tiles, `cellkit.models.images`): every
        embedding, clean and perturbed, is averaged over the rows of each group before measuring, so
        drift is image-level; ``max_cells`` then counts groups (all rows of the sampled groups are used).

    Reads the store's images, masks, obs and channel statistics (`cellkit.io.read_cells`); writes nothing.
    Returns a `RobustnessResult`. Results depend only on the seed, not on ``batch_size``.
    """
    from ..io.cells import open_cells, read_cells
    from ..models.data import channel_stats
    from ..models.embed import ModelEmbedder
    from ..models.hf import MAEEmbedder, is_hf

    if perturbations is None:
        perturbations = dict(SEVERITIES)
    elif not isinstance(perturbations, Mapping):
        perturbations = {name: SEVERITIES.get(name) for name in perturbations}
    unknown = [name for name, levels in perturbations.items() if name not in PERTURBATIONS or not levels]
    if unknown:
        raise ValueError(f"unknown perturbation(s) {unknown}; choose from {sorted(PERTURBATIONS)}")
    perturbations = {name: sorted(float(s) for s in levels) for name, levels in perturbations.items()}

    images, masks, obs = read_cells(cells)
    attrs = open_cells(cells).attrs
    channels = list(attrs["channels"])
    n = images.shape[0]
    rng = np.random.default_rng(seed)
    if groupby is None:
        rows = np.arange(n) if n <= max_cells else np.sort(rng.choice(n, max_cells, replace=False))
    else:
        if groupby not in obs:
            raise KeyError(f"the store's obs has no {groupby!r} column to group rows by")
        codes, uniques = pd.factorize(obs[groupby].astype(str))
        chosen = (np.arange(len(uniques)) if len(uniques) <= max_cells
                  else rng.choice(len(uniques), max_cells, replace=False))
        rows = np.flatnonzero(np.isin(codes, chosen))
    if len(rows) <= k:
        raise ValueError(f"need more than k={k} cells, the store has {len(rows)}")
    mean, std = channel_stats(cells)

    items = models.items() if isinstance(models, Mapping) else [(None, m) for m in models]
    embedders, sources = {}, {}
    for name, model in items:
        if callable(model):
            embedder = model
        elif model == "handcrafted":
            embedder = HandcraftedEmbedder(channels)
        elif is_hf(model):
            embedder = MAEEmbedder(str(model), channels, mean, std, device=device, **(hf_options or {}))
        else:
            embedder = ModelEmbedder(model, channels, device=device)
        name = name or _model_name(model, embedder, embedders)
        embedders[name], sources[name] = embedder, str(model) if not callable(model) else repr(model)

    # models trained with norm_by see each crop at its plate's factor, computed once from the clean store
    scales = {m: e.store_scale(cells) for m, e in embedders.items() if hasattr(e, "store_scale")}
    conditions = [("clean", 0.0)] + [(p, s) for p, levels in perturbations.items() for s in levels]
    out = {m: {c: [] for c in conditions} for m in embedders}
    need_masks = any(getattr(e, "needs_masks", False) for e in embedders.values())
    done = 0
    for start in range(0, len(rows), batch_size):
        idx = rows[start:start + batch_size]
        x = torch.from_numpy(np.asarray(images[idx].compute(), dtype=np.float32))
        mask = torch.from_numpy(np.asarray(masks[idx].compute())) if need_masks else None
        for cond in conditions:
            xp = x if cond[0] == "clean" else perturb(x, cond[0], cond[1], scale=std, seed=seed, offset=start)
            for m, embedder in embedders.items():
                extra = {} if scales.get(m) is None else {"scale": torch.from_numpy(scales[m][idx])}
                if getattr(embedder, "needs_masks", False):
                    z = embedder(xp, perturb_masks(mask, cond[0], cond[1], seed=seed, offset=start), **extra)
                else:
                    z = embedder(xp, **extra)
                out[m][cond].append(np.asarray(z, dtype=np.float32))
        done += len(idx)
        if progress:
            progress(done, len(rows))
    embeddings = {m: {c: np.concatenate(parts) for c, parts in conds.items()} for m, conds in out.items()}
    for m, embedder in embedders.items():
        if hasattr(embedder, "postprocess"):
            embeddings[m] = embedder.postprocess(embeddings[m])

    sub_obs = obs.iloc[rows]
    if groupby is not None:
        group_codes, group_ids = pd.factorize(sub_obs[groupby].astype(str))
        if len(group_ids) <= k:
            raise ValueError(f"need more than k={k} groups of {groupby!r}, have {len(group_ids)}")
        counts = np.bincount(group_codes)[:, None]

        def group_mean(z):
            out = np.zeros((len(group_ids), z.shape[1]), np.float64)
            np.add.at(out, group_codes, z)
            return (out / counts).astype(np.float32)

        embeddings = {m: {c: group_mean(z) for c, z in conds.items()} for m, conds in embeddings.items()}
        first = pd.Series(np.arange(len(sub_obs))).groupby(group_codes).first().to_numpy()
        sub_obs = sub_obs.iloc[first]
    records = []
    for m, conds in embeddings.items():
        clean = conds[("clean", 0.0)]
        spread = _spread(clean, seed)
        nsc_clean = well_nsc(sub_obs, clean, control=control, label=label)
        for (p, s), z in conds.items():
            nsc = nsc_clean if p == "clean" else well_nsc(sub_obs, z, control=control, label=label)
            records.append({"model": m, "perturbation": p, "severity": s, **drift(clean, z, spread=spread),
                            "knn_overlap": float(knn_overlap(clean, z, k).mean()), "nsc": nsc,
                            "delta_nsc": nsc - nsc_clean})
    params = {"cells": str(cells), "n_cells": int(len(rows)), "max_cells": max_cells, "k": k, "seed": seed,
              "perturbations": perturbations, "channel_std": [float(v) for v in std], "control": control,
              "label": label, "models": sources, "groupby": groupby,
              "masks_available": bool(attrs.get("masks_available", True))}
    return RobustnessResult(pd.DataFrame.from_records(records), sub_obs, embeddings, params)


def robustness_summary(result: RobustnessResult, *, metric: str = "knn_overlap") -> pd.DataFrame:
    """One row per model, one column per (perturbation, severity): ``metric`` from ``result.table``."""
    t = result.table[result.table["perturbation"] != "clean"]
    return t.pivot_table(index="model", columns=["perturbation", "severity"], values=metric, sort=False)
