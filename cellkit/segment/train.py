"""Train a Cellpose 3 network (CPnet) from folders of image/mask pairs, resumably.

`train_segmenter` reads the pairs, holds out a seeded validation split, runs cellkit's loop
(`train_loop.train`: Cellpose's network, flows, augmentation and loss; a checkpoint with every
state needed to resume exactly) and exports the best held-out weights as a Cellpose weight file
usable with ``get_segmenter("cellpose", model=path)`` (and with Cellpose itself at Cellpose's
standard widths), plus ``<model>.json``: settings, split, learning curve, sha256.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .._atomic import atomic_path
from ..io.images import read_image
from ..io.provenance import file_sha256
from .cellpose_backend import sidecar_path

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


def load_image_mask_pairs(images: str | os.PathLike, masks: str | os.PathLike):
    """Read image/mask pairs matched by file stem.

    Returns
    -------
    names : list[str]; images : list of (H, W) arrays; masks : list of (H, W) integer label images.
    Raises FileNotFoundError / ValueError listing every image without a mask or of a different shape.
    """
    images, masks = Path(images), Path(masks)
    for folder in (images, masks):
        if not folder.is_dir():
            raise FileNotFoundError(f"no folder {folder}")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images}")
    mask_files = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    problems, names, ims, mks = [], [], [], []
    for f in files:
        if f.stem not in mask_files:
            problems.append(f"{f.name}: no mask named {f.stem}.* in {masks}")
            continue
        image, mask = read_image(str(f)), read_image(str(mask_files[f.stem]))
        if image.shape != mask.shape:
            problems.append(f"{f.name}: image {image.shape} and mask {mask.shape} differ in shape")
        elif not np.issubdtype(mask.dtype, np.integer):
            problems.append(f"{f.name}: mask dtype {mask.dtype} is not an integer label image")
        else:
            names.append(f.stem)
            ims.append(image)
            mks.append(mask.astype(np.int32))
    if problems:
        raise ValueError(f"{len(problems)} problem(s) with the training pairs:\n  " + "\n  ".join(problems))
    return names, ims, mks


def split_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) of a seeded random hold-out split; at least one of each."""
    if n < 2:
        raise ValueError("training needs at least 2 image/mask pairs (one is held out for validation)")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, int(round(fraction * n))))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_segmenter(images: str | os.PathLike, masks: str | os.PathLike, out: str | os.PathLike, *,
                    checkpoint: str | os.PathLike | None = None, resume: bool = False, epochs: int = 100,
                    validation_fraction: float = 0.1, seed: int = 0, nbase: Sequence[int] | None = None,
                    diam_mean: float = 17.0, patch_size: int = 128, batch_size: int = 8,
                    images_per_epoch: int = 64, learning_rate: float = 0.005, weight_decay: float = 1e-5,
                    eval_every: int = 10, checkpoint_every: int = 5, stop_after_epoch: int | None = None,
                    pretrained: str | None = None, export_only: bool = False,
                    flow_cache: str | os.PathLike | None = "default", log=print) -> dict:
    """Train a Cellpose nucleus model from folders of image/mask pairs and export it to ``out``.

    Parameters
    ----------
    images, masks
        Folders of single-channel images and integer label images, matched by file stem.
    out
        Model file to write (the best weights by held-out AP@0.5, or the last without a hold-out);
        ``<out>.json`` gets the report.
    checkpoint
        Checkpoint file (default ``<out>.ckpt``), overwritten every ``checkpoint_every`` epochs;
        ``resume=True`` continues it (same data and settings; ``epochs`` may grow).
    validation_fraction
        Seeded fraction of pairs held out (never trained on) for the learning curve and the choice
        of the best weights; 0 trains on all.
    stop_after_epoch
        Stop after this many epochs in total (checkpointed) without exporting, to split a run.
    pretrained
        Start from these weights (a cellkit or Cellpose model file) instead of from scratch; its
        architecture is kept.
    export_only
        Export ``out`` from the checkpoint without training.

    Returns
    -------
    dict report (also in ``<out>.json``).
    """
    from . import train_loop
    from .train_data import prepare

    checkpoint = Path(checkpoint) if checkpoint else Path(str(out) + ".ckpt")
    names, ims, mks = load_image_mask_pairs(images, masks)
    if validation_fraction > 0:
        train_idx, val_idx = split_holdout(len(names), validation_fraction, seed)
    else:
        train_idx, val_idx = np.arange(len(names)), np.arange(0)
    log(f"{len(train_idx)} training images, {len(val_idx)} held out for validation")
    if export_only:  # the checkpoint holds all an export needs: no flows to prepare
        return export_model(train_loop.load_checkpoint(checkpoint), out, images=images, masks=masks,
                            checkpoint=checkpoint, log=log)
    data = prepare([ims[i] for i in train_idx], [mks[i] for i in train_idx], [names[i] for i in train_idx],
                   cache=flow_cache, log=log)
    validation = ([ims[i] for i in val_idx], [mks[i] for i in val_idx], [names[i] for i in val_idx]) \
        if len(val_idx) else None
    init = None
    if pretrained:
        from . import cellpose_backend as cpb
        import torch

        path = cpb.resolve_model(pretrained)
        arch = cpb.model_architecture(path)
        if nbase is not None and [arch["nbase"][0], *nbase] != arch["nbase"]:
            raise ValueError(f"nbase {list(nbase)} differs from the pretrained model's {arch['nbase'][1:]}; "
                             "leave it unset to continue training that network")
        nbase, diam_mean = arch["nbase"][1:], arch["diam_mean"]
        init = torch.load(str(path), map_location="cpu", weights_only=True)
    config = train_loop.TrainConfig(
        nbase=[2, *(nbase or (16, 32, 64, 128))], diam_mean=float(diam_mean), patch_size=patch_size,
        batch_size=batch_size, images_per_epoch=images_per_epoch, epochs=epochs, learning_rate=learning_rate,
        weight_decay=weight_decay, seed=seed, eval_every=eval_every, checkpoint_every=checkpoint_every)
    state = train_loop.train(data, config, checkpoint, validation=validation, resume=resume,
                             stop_after_epoch=stop_after_epoch, init=init, log=log)
    if state["epoch"] < state["config"]["epochs"]:
        log(f"stopped at epoch {state['epoch']} of {state['config']['epochs']}; checkpoint {checkpoint}")
        return {"checkpoint": str(checkpoint), "epoch": state["epoch"], "exported": False}
    return export_model(state, out, images=images, masks=masks, checkpoint=checkpoint, log=log)


def export_model(state: dict, out: str | os.PathLike, *, images=None, masks=None, checkpoint=None,
                 log=print) -> dict:
    """Write the checkpoint's best weights (its last without a validation) as a Cellpose weight file
    ``out`` and the report ``<out>.json`` (settings, split, learning curve, sha256)."""
    import torch

    from .cellpose_backend import load_cellpose

    best = state["best"]
    weights = best["net"] if best else state["net"]
    with atomic_path(out) as tmp:
        torch.save(weights, tmp)
    cfg = state["config"]
    report = {"model": str(out), "sha256": file_sha256(out), "images": str(images), "masks": str(masks),
              "checkpoint": str(checkpoint), **{k: cfg[k] for k in cfg if k != "nbase"},
              "architecture": {"nbase": cfg["nbase"], "diam_mean": cfg["diam_mean"]},
              "epochs_trained": state["epoch"], "exported_epoch": best["epoch"] if best else state["epoch"],
              "steps": state["epoch"] * -(-cfg["images_per_epoch"] // cfg["batch_size"]),
              "n_train_images": len(state["train_names"]), "train_names": state["train_names"],
              "validation_names": state["validation_names"],
              "validation": None if not best else {k: v for k, v in best.items() if k != "net"},
              "learning_curve": state["history"]}
    with atomic_path(sidecar_path(out)) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    load_cellpose.cache_clear()
    if best:
        log(f"exported epoch {best['epoch']}: held-out AP@0.5 = {best['ap@0.5']:.3f}, AP@0.75 = {best['ap@0.75']:.3f}")
    return report
