"""Training options: the methods, their defaults and presets, and the merge of user options into a full config.

`default_config` is what `cellkit.models.train.train` starts a new model from; `training_options` turns the
CLI's and pipelines' option names into its ``config`` argument; `changed_options` says what a resumed run
would change.
"""

from __future__ import annotations

import json
from pathlib import Path

from .augment import AugmentConfig
from .encoders import check_weak_loss

METHODS = ("simclr", "byol", "autoencoder", "mae", "weak", "pixel_pca", "random")
# "pca" (the earlier name of the PCA of crop pixels): accepted, and read from older model folders
METHOD_ALIASES = {"pca": "pixel_pca"}
# obsm keys of the embeddings; the pixel PCA has its own key, so scanpy's X_pca (a PCA of X) is never overwritten
EMBEDDING_KEYS = {"simclr": "X_simclr", "byol": "X_byol", "autoencoder": "X_ae", "mae": "X_mae",
                  "pixel_pca": "X_pixel_pca", "pca": "X_pixel_pca", "random": "X_random", "weak": "X_weak"}

DEFAULTS = {
    "epochs": 10, "batch_size": 128, "lr": 1e-3, "weight_decay": 1e-5, "seed": 0,
    "warmup_epochs": 0,          # linear lr warm-up over these first epochs, then the cosine over the rest (the warm-up
                                 # does not depend on "epochs": train 1 epoch, then resume with more = train them all)
    "input_size": 64,            # crops are centre-cropped (embedding) or random-resized-cropped (training) to this
    "width": 32, "blocks": [1, 1, 1, 1], "stem_pool": True,  # ResNet encoder
    "embed_pool": "last",        # the embedding: "last" stage's average pool, or "stages" (every stage's, concatenated)
    "proj_hidden": 256, "proj_dim": 64,              # projection / prediction heads
    "temperature": 0.2,                              # SimCLR
    "ema": 0.99,                                     # BYOL target EMA at the start (cosine to 1)
    "latent_dim": 64, "ae_depth": 3,                 # autoencoder
    "n_components": 50,                              # PCA
    "patch_size": 8, "mae_dim": 64, "mae_depth": 4, "mae_heads": 4, "mae_decoder_depth": 1,  # MAE (ViT)
    "mask_ratio": 0.75,
    "mae_norm_pix": False,                           # MAE: reconstruct each patch's pixels normalized per patch
                                                     # (True; up to session 8) or as they are in the view (False;
                                                     # seeds 3 and 5, 5 CPU-minutes: mean plain NSC 0.542 vs 0.537,
                                                     # a tie, NSCB 0.359 vs 0.302)
    "weak_label": ["compound", "concentration"],     # weak supervision: obs columns whose values make a class
    "weak_loss": "ce", "label_smoothing": 0.0,       # weak supervision: "ce", "supcon" or "ce+supcon" (its
                                                     # default: METHOD_DEFAULTS)
    "weak_group": None,                              # weak supervision: obs columns (e.g. ["batch"]); a cell is
                                                     # contrasted / classified only against its own group's
                                                     # treatments, so batch features earn the loss nothing;
                                                     # "auto" (weak default): ["batch"] with 2+ batches
    "weak_adversary": 0.0,                           # weak supervision: weight of a group (batch) classifier
                                                     # trained through a reversed gradient (0 = none)
    "positive_by": None,                             # SimCLR: obs columns (e.g. ["plate", "well"]); cells that
                                                     # share their values are each other's positives beside the
                                                     # two views of a cell (cells of one well share a treatment);
                                                     # "auto" (SimCLR's default): ["plate", "well"] when present
    "contrast_within": None,                         # SimCLR with positive_by: obs columns (e.g. ["plate"]); a
                                                     # cell is contrasted only with its own group's cells, so
                                                     # features that tell the groups apart earn nothing; "auto":
                                                     # ["plate"] when positive_by is set and the obs has it
    "norm_by": None,                                 # obs column(s) (e.g. "plate"): bring each one's mean crop
                                                     # intensity per channel (of its norm_control cells) to one
                                                     # reference before the channel z-score (`group_scale`);
                                                     # "auto": "plate" when the store's obs has it
    "norm_control": "compound == 'DMSO'",            # obs query: the cells that set each group's level
    "preset": None,                                  # the preset these options started from (see PRESETS)
    "max_cells": None,                               # train on (about) this many cells, whole chunks spread evenly
    "num_workers": 2, "shuffle_cells": 1024, "stats_cells": 4096, "amp": True,
    "augment": AugmentConfig().to_dict(),
}
# Options that name obs columns ("a,b", "auto", "none" or a list).
COLUMN_OPTIONS = ("weak_group", "norm_by", "positive_by", "contrast_within")
# Keys `train` adds to a saved config.json (so a saved config can be passed back as options).
RECORDED_KEYS = {"method", "channels", "crop_size", "norm_mean", "norm_std", "cells", "epochs_done", "history",
                 "complete", "cellkit_version", "torch_version", "n_train_cells", "weights_sha256", "weak_classes",
                 "weak_group_classes", "view_size_measured", "norm_reference"}
# The autoencoder and the MAE reconstruct their input: photometric jitter and noise only make the target noisier.
_RECONSTRUCTION_AUGMENT = AugmentConfig(crop_scale=(0.8, 1.0), brightness=0.0, contrast=0.0, blur_prob=0.0,
                                        noise_std=0.0).to_dict()
# Weak supervision: supervised contrastive on the treatments, chosen on seed 3 of benchmarks/ssl_moa.py
# (session 5, 5-minute budget, T 0.1; treatment NSC plain / corrected: supcon 0.844 / 0.844, ce+supcon 0.854 /
# 0.823, ce 0.802 / 0.792, ce with label smoothing 0.1 0.792 / 0.865), with negatives restricted to the cell's batch
# (weak_group "auto"; session 6, seeds 3 and 5, 5 minutes, plain NSC under the PCA-100 DEFAULT: 0.927 / 0.865
# against 0.865 / 0.750 without, 0.938 / 0.760 for ce + supcon within the batch; docs/models.md); labels = the
# compound alone (both concentrations one class) and the embedding pooled from every stage (session 7, seeds 3 and
# 5, 5 CPU-minutes, plain NSC / NSCB: 0.969 / 0.844 and 0.875 / 0.615, mean 0.922 / 0.730, against compound +
# concentration 0.979 / 0.833 and 0.865 / 0.542, mean 0.922 / 0.688 (a tie on NSC, broken by NSCB); last-stage
# pool 0.890 (compound + concentration) and 0.901 (compound); a batch-adversarial head, weak_adversary 1: 0.896 on
# seed 3); temperature 0.3 (session 8, seeds 3 and 5, 5 CPU-minutes, plain NSC / NSCB: 0.979 / 0.885 and
# 0.906 / 0.573, mean 0.943 / 0.729, against 0.922 / 0.730 at T 0.1 and 0.917 / 0.745 at T 0.5; an added SimCLR
# instance term at T 0.1: 0.833 on seed 3).
# SimCLR and BYOL (and random-init, their control, which only uses the view and the pooling): stronger generic
# augmentation (resized crop 0.25-1 of the area, per-channel brightness and contrast +-0.4) and the embedding
# pooled from every ResNet stage. Chosen on seed 3 of benchmarks/ssl_moa.py (SimCLR, cpu-small, 5 minutes, 1 thread;
# treatment NSC plain: 0.833 stages / 0.792 last pool, against 0.750 / 0.740 for the earlier 0.5-1, +-0.2
# augmentation; MICROSCOPY_AUGMENT 0.656 / 0.562; temperature 0.5: 0.677 / 0.594, 0.1: 0.729 / 0.740;
# docs/models.md, "Session 6").
# Session 7: the per-channel jitter replaced by ONE intensity factor for all channels of a crop (raw x exp(U(-0.4,
# 0.4)); ratios between channels kept), chosen on seeds 3 and 5 (SimCLR, 5 CPU-minutes each, stage pooling;
# mean plain treatment NSC 0.776 against 0.760 for the +-0.4 per-channel jitter, but NSCB 0.490 vs 0.620 and mAP
# 0.369 vs 0.515: the kept ratios carry batch staining too; docs/models.md, "Session 7").
SSL_AUGMENT = AugmentConfig(crop_scale=(0.25, 1.0), brightness=0.0, contrast=0.0, intensity_scale=0.4).to_dict()
# Session 9: SimCLR's crops brought to one intensity level per plate (norm_by "auto": each plate's DMSO cells' mean
# per channel), chosen on seeds 3 and 5 (5 CPU-minutes, stage pooling, plain NSC / NSCB: 0.812 / 0.740 and
# 0.823 / 0.458, mean 0.818 / 0.599, against 0.833 / 0.740 and 0.719 / 0.240, mean 0.776 / 0.490, without); its
# control random-init takes the same input; weak supervision with it lost (0.927 / 0.875 and 0.917 / 0.594, mean
# 0.922 against 0.943) and keeps the store's global statistics. BYOL with it, same seeds and budget: 0.781 / 0.729
# and 0.792 / 0.323, mean 0.787 / 0.526, against 0.646 / 0.469 and 0.667 / 0.250, mean 0.657 / 0.360, without.
# Session 10: SimCLR's positives are the other cells of a cell's well too (positive_by "auto" = plate + well),
# contrasted only within the plate (contrast_within "auto"); no treatment label enters. Chosen on seeds 3 and 5
# (5 CPU-minutes, stage pooling, plain NSC / NSCB: 0.990 / 0.927 and 0.917 / 0.625, mean 0.953 / 0.776, against
# 0.812 / 0.740 and 0.823 / 0.458, mean 0.818 / 0.599, for the two views of one cell alone).
# Session 12: weak supervision takes SimCLR's input, SSL_AUGMENT and norm_by "auto" (it trained on the base
# augmentation, whose per-channel jitter changes the ratios between channels). Chosen on the batch-gain generator's
# seeds 3 and 5 (5 CPU-minutes, stage pooling, plain NSC / NSCB: 0.885 / 0.833 and 0.875 / 0.573, mean 0.880 /
# 0.703, against 0.896 / 0.677 and 0.833 / 0.594, mean 0.865 / 0.635, before; SSL_AUGMENT alone: 0.906 / 0.833 and
# 0.781 / 0.583, mean 0.844 / 0.708).
METHOD_DEFAULTS = {"simclr": {"augment": SSL_AUGMENT, "embed_pool": "stages", "norm_by": "auto",
                              "positive_by": "auto", "contrast_within": "auto"},
                   "byol": {"augment": SSL_AUGMENT, "embed_pool": "stages", "norm_by": "auto"},
                   "random": {"embed_pool": "stages", "norm_by": "auto"},
                   "autoencoder": {"augment": _RECONSTRUCTION_AUGMENT},
                   "mae": {"augment": _RECONSTRUCTION_AUGMENT, "lr": 5e-4, "weight_decay": 0.05},
                   "weak": {"augment": SSL_AUGMENT, "norm_by": "auto", "weak_loss": "supcon", "temperature": 0.3,
                            "weak_group": "auto", "weak_label": ["compound"], "embed_pool": "stages"}}

# The microscopy recipe: remove nuisance (orientation: any rotation and flips; position: a small shift;
# plate-level staining: one intensity factor for all channels; focus: blur; noise), keep biology (no scale
# change, so cell size stays; no per-channel jitter, so the ratios between channels stay); views sized from
# the measured cells so that a whole cell fits.
MICROSCOPY_AUGMENT = {"crop_scale": None, "flips": True, "rot90": False, "rotation": True, "translate": 0.08,
                      "brightness": 0.0, "contrast": 0.0, "intensity_scale": 0.3, "blur_prob": 0.5,
                      "blur_sigma": [0.1, 1.5], "noise_std": 0.1, "view_size": "auto"}
# Presets: a starting set of options (explicit options override them). Nothing in them needs a GPU:
# on a CPU, ``gpu`` runs (slowly) in float32. They size the views from the cells and keep each method's own
# augmentation (SSL_AUGMENT for SimCLR / BYOL: on seed 3 of benchmarks/ssl_moa.py it beat MICROSCOPY_AUGMENT,
# 0.833 against 0.656 treatment NSC at 5 minutes; session 3's 1-minute test on seed 1 had 0.406 against 0.323).
PRESET_AUGMENT = {"view_size": "auto"}
PRESETS = {
    "cpu-small": {"width": 16, "blocks": [1, 1, 1, 1], "input_size": 48, "batch_size": 128, "epochs": 10,
                  "lr": 2e-3, "proj_hidden": 128, "proj_dim": 64, "num_workers": 1, "augment": PRESET_AUGMENT},
    "gpu": {"width": 64, "blocks": [2, 2, 2, 2], "input_size": 96, "batch_size": 512, "epochs": 100, "lr": 2e-3,
            "proj_hidden": 1024, "proj_dim": 128, "num_workers": 8, "amp": True, "shuffle_cells": 8192,
            "augment": PRESET_AUGMENT},
}

# A preset's options that differ for one method. Session 10: weak supervision sees 64 px views under cpu-small
# (seeds 3 and 5, 5 CPU-minutes, stage pooling, plain NSC / NSCB: 0.969 / 0.854 and 0.896 / 0.635, mean 0.932 /
# 0.745, against 0.979 / 0.885 and 0.906 / 0.573, mean 0.943 / 0.729, at 48 px: a tie on NSC (one treatment per
# seed, under the 0.011 tie width) broken by NSCB). Session 11, paired on the batch-gain generator's seeds 3 and 5:
# 64 px 0.865 / 0.635 against 48 px 0.870 / 0.604, a tie again, broken by NSCB the same way.
PRESET_METHOD_OPTIONS = {("cpu-small", "weak"): {"input_size": 64}}


def default_config(method: str, preset: str | None = None, **overrides) -> dict:
    """The training config of ``method`` (from ``preset`` when given) with ``overrides`` applied
    (unknown keys are refused).

    ``augment`` may be given partially: its keys override the method's (or preset's) augmentation defaults.
    """
    method = METHOD_ALIASES.get(method, method)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    preset = preset or overrides.pop("preset", None)
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    overrides.pop("preset", None)
    config = json.loads(json.dumps({**DEFAULTS, **METHOD_DEFAULTS.get(method, {})}))
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown training option(s): {sorted(unknown)}; known: {sorted(config)}")
    if preset is not None:
        chosen = json.loads(json.dumps(PRESETS[preset]))
        if method in ("autoencoder", "mae"):  # reconstruction targets keep their own augmentation, not their view
            chosen["augment"] = {"view_size": chosen["augment"]["view_size"]}
        config["augment"] = {**config["augment"], **chosen.pop("augment", {})}
        config.update(chosen, **PRESET_METHOD_OPTIONS.get((preset, method), {}), preset=preset)
    aug = {**config["augment"], **(overrides.pop("augment", None) or {})}
    config.update(overrides)
    config["augment"] = AugmentConfig.from_dict(aug).to_dict()
    config["method"] = method
    for key in COLUMN_OPTIONS:
        config[key] = _columns(config[key])
    named = config["weak_label"] + [c for key in COLUMN_OPTIONS if isinstance(config[key], list) for c in config[key]]
    if "moa" in [str(c).lower() for c in named]:
        raise ValueError(f"{', '.join(('weak_label',) + COLUMN_OPTIONS)} must not use the MOA: it is what the "
                         "profiles are scored on")
    check_weak_loss(config["weak_loss"])
    if method in ("autoencoder", "mae", "pixel_pca"):  # no ResNet stages: their embedding is their own
        config["embed_pool"] = "last"
    from .embed import EMBED_POOLS

    if config["embed_pool"] not in EMBED_POOLS:
        raise ValueError(f"unknown embed_pool {config['embed_pool']!r}; choose one of {', '.join(EMBED_POOLS)}")
    return config


def _columns(value):
    """An option naming obs columns: ``"a,b"`` -> ``["a", "b"]``; ``"none"`` (the CLI's way to say None) -> None;
    ``"auto"``, None and lists as they are."""
    if not isinstance(value, str) or value == "auto":
        return value
    return None if value == "none" else value.split(",")


def read_config_file(path) -> dict:
    """Options from a JSON or YAML file (a saved config.json works too)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def training_options(method: str, config: dict | None = None, *, depth: int | None = None, **options) -> dict:
    """Training options from user-facing names: ``config`` (e.g. `read_config_file`) updated with the
    ``options`` that are not None; ``depth`` = transformer blocks for ``"mae"`` (``mae_depth``), else residual
    blocks per stage (``blocks``). Returns the ``config`` argument of `train`."""
    out = dict(config or {})
    out.update({k: v for k, v in options.items() if v is not None})
    if depth is not None and method == "mae":
        out["mae_depth"] = depth
    elif depth is not None:
        out["blocks"] = [depth] * len(out.get("blocks", DEFAULTS["blocks"]))
    return out


def changed_options(saved: dict, config: dict) -> dict:
    """The options of ``config`` whose values differ from the ``saved`` run's. A partial ``augment`` (as
    `default_config` takes it) is completed from the saved one first, so only the keys it changes count."""
    changed = {}
    for key, value in config.items():
        if key not in saved:
            continue
        old = saved[key]
        if key in COLUMN_OPTIONS:  # "plate" as the CLI gives it = ["plate"] as saved
            value = _columns(value)
        if key == "augment" and isinstance(value, dict):
            old = AugmentConfig.from_dict(old).to_dict()
            value = AugmentConfig.from_dict({**old, **value}).to_dict()
        if old != value:
            changed[key] = value
    return changed
