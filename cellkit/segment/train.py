"""Train a Cellpose 3 network (CPnet) from image/mask pairs, from scratch or from weights.

The model is saved as a Cellpose weight file usable with ``get_segmenter("cellpose", model=path)``
(and with Cellpose itself when it has Cellpose's standard channel widths), plus ``<model>.json``
with the training parameters, the network's architecture and the validation scores on a held-out
split.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np

from .._atomic import atomic_path
from ..io.images import read_image
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


def train_cellpose(images: list[np.ndarray], masks: list[np.ndarray], out: str | os.PathLike, *,
                   epochs: int = 100, batch_size: int = 8, learning_rate: float = 0.005,
                   weight_decay: float = 1e-5, diam_mean: float | None = None, patch_size: int = 224,
                   nbase: Sequence[int] | None = None, images_per_epoch: int | None = None,
                   checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 50,
                   pretrained: str | None = None, seed: int = 0, gpu: bool | None = None,
                   test_images=None, test_masks=None, log=None) -> dict:
    """Train a CPnet on (image, mask) pairs and save its weights to ``out``.

    Parameters
    ----------
    images, masks
        (H, W) images and integer label images.
    epochs, batch_size, learning_rate, weight_decay
        Cellpose ``train_seg`` options (AdamW; the rate warms up over the first 10 epochs of every
        run and halves 10 times over the last 100 when ``epochs > 300``).
    diam_mean
        Object diameter (px) the network works at: each training image is rescaled by its own
        masks' median diameter to it. Default 17 (Cellpose's nuclei model), or the pretrained's.
    patch_size
        Side of the square training patches (multiple of 16; Cellpose uses 224).
    nbase
        Channel widths of the CPnet's four levels; default Cellpose's ``(32, 64, 128, 256)`` (or the
        pretrained model's). ``(16, 32, 64, 128)`` has a quarter of the weights and trains about 10x
        faster per step on a CPU; `cellpose_backend.load_cellpose` rebuilds it from the weights.
    images_per_epoch
        Patches per epoch (Cellpose's ``nimg_per_epoch``); default one per training image.
    checkpoint_dir, checkpoint_every
        Keep a copy of the weights every ``checkpoint_every`` epochs in
        ``checkpoint_dir/models/cellkit_model_epoch_NNNN`` (loadable like ``out``).
    pretrained
        Continue from these weights (name or path) instead of starting from scratch; the network
        is built as the weights describe. Resuming restarts Cellpose's rate warm-up and its
        per-epoch seeds (the patch sequence of a run repeats).
    log
        Called with Cellpose's progress lines (losses every 10 epochs); None: silent.

    Returns
    -------
    dict: seconds, seconds_per_step, steps, final train and test loss, architecture
    (``nbase`` with the input channels first, ``diam_mean``). ``<out>.json`` gets these and the
    options.
    """
    import torch
    from cellpose import train

    from . import cellpose_backend as cpb

    torch.manual_seed(seed)
    np.random.seed(seed)  # cellpose draws its patches and augmentations with numpy's global state
    use_gpu = cpb.default_gpu() if gpu is None else gpu
    if pretrained:
        # an uncached copy: inference converts cached networks, training changes this one
        model = cpb.load_cellpose.__wrapped__(str(cpb.resolve_model(pretrained)), use_gpu)
        arch = {"nbase": list(model.nbase), "diam_mean": float(model.diam_mean)}
        if nbase is not None and [arch["nbase"][0], *nbase] != arch["nbase"]:
            raise ValueError(f"nbase {list(nbase)} differs from the pretrained model's {arch['nbase'][1:]}; "
                             "leave it unset to continue training that network")
        if diam_mean is not None and diam_mean != arch["diam_mean"]:
            raise ValueError(f"diam_mean {diam_mean} differs from the pretrained model's {arch['diam_mean']}")
    else:
        arch = {"nbase": [2, *(nbase or cpb.STANDARD_NBASE)], "diam_mean": float(diam_mean or 17.0)}
        model = cpb.new_model(arch["nbase"], arch["diam_mean"], use_gpu)
    n_steps = epochs * -(-(images_per_epoch or len(images)) // batch_size)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        save_path = Path(checkpoint_dir) if checkpoint_dir else Path(tmp)
        save_path.mkdir(parents=True, exist_ok=True)
        with _forward_log(train.train_logger, log):
            path, train_losses, test_losses = train.train_seg(
                model.net, train_data=[np.asarray(i, np.float32) for i in images], train_labels=list(masks),
                test_data=None if test_images is None else [np.asarray(i, np.float32) for i in test_images],
                test_labels=test_masks, channels=[0, 0], normalize=True, n_epochs=epochs, batch_size=batch_size,
                learning_rate=learning_rate, weight_decay=weight_decay, save_path=str(save_path),
                save_every=checkpoint_every if checkpoint_dir else max(epochs, 1), save_each=bool(checkpoint_dir),
                nimg_per_epoch=images_per_epoch, bsize=patch_size, min_train_masks=1, model_name="cellkit_model")
        seconds = time.perf_counter() - start
        with atomic_path(out) as target:
            shutil.copyfile(path, target)
    cpb.load_cellpose.cache_clear()
    fit = {"seconds": round(seconds, 1), "steps": n_steps, "seconds_per_step": round(seconds / max(n_steps, 1), 3),
           "final_train_loss": _last_recorded(train_losses),
           "final_test_loss": _last_recorded(test_losses) if test_images is not None else None,
           "architecture": arch}
    options = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
               "weight_decay": weight_decay, "patch_size": patch_size, "images_per_epoch": images_per_epoch,
               "pretrained": pretrained, "seed": seed, "n_train_images": len(images)}
    with atomic_path(sidecar_path(out)) as target:
        target.write_text(json.dumps({**options, **fit}, indent=2))
    return fit


@contextmanager
def _forward_log(logger, log):
    """Pass ``logger``'s INFO records to ``log`` while the block runs (nothing when ``log`` is None)."""
    if log is None:
        yield
        return
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: log(record.getMessage())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _last_recorded(losses) -> float | None:
    """Last non-zero loss (Cellpose records the test loss only every few epochs, zeros between)."""
    losses = np.asarray(losses, float)
    recorded = losses[losses > 0]
    return float(recorded[-1]) if recorded.size else None


def train_segmenter(images: str | os.PathLike, masks: str | os.PathLike, out: str | os.PathLike, *,
                    epochs: int = 100, validation_fraction: float = 0.2, diameter: float | str | None = "auto",
                    seed: int = 0, gpu: bool | None = None, log=print, **options) -> dict:
    """Train a Cellpose nucleus model from folders of image/mask pairs and validate it on a hold-out.

    Parameters
    ----------
    images, masks
        Folders of single-channel images and integer label images, matched by file stem.
    out
        Model file to write; ``<out>.json`` gets the report.
    validation_fraction
        Fraction of the pairs held out (seeded by ``seed``), never trained on; 0 trains on all
        pairs and skips the validation (score such a model only on other images).
    diameter
        Diameter used when validating (see `CellposeSegmenter`; ``"auto"`` measures it per image).
    options
        `train_cellpose` options (``batch_size``, ``learning_rate``, ``patch_size``, ``nbase``,
        ``images_per_epoch``, ``diam_mean``, ``pretrained``, ``checkpoint_dir``...).

    Returns
    -------
    dict report: parameters, train/validation names, seconds, architecture, ``validation`` (pooled
    AP@0.5 and AP@0.75 and per image; None without a hold-out).
    """
    from .backends import CellposeSegmenter
    from .matching import score_images

    names, ims, mks = load_image_mask_pairs(images, masks)
    if validation_fraction > 0:
        train_idx, val_idx = split_holdout(len(names), validation_fraction, seed)
    else:
        train_idx, val_idx = np.arange(len(names)), np.arange(0)
    log(f"training on {len(train_idx)} images, validating on {len(val_idx)} held-out images, {epochs} epochs")
    fit = train_cellpose([ims[i] for i in train_idx], [mks[i] for i in train_idx], out, epochs=epochs, seed=seed,
                         gpu=gpu, log=log, test_images=[ims[i] for i in val_idx] or None,
                         test_masks=[mks[i] for i in val_idx] or None, **options)
    scores = None
    if len(val_idx):
        segmenter = CellposeSegmenter(model=str(out), cell_model=None, diameter=diameter, gpu=gpu)
        predictions = segmenter.segment_nuclei([ims[i] for i in val_idx])
        scores = score_images([(mks[i], p) for i, p in zip(val_idx, predictions)],
                              names=[names[i] for i in val_idx])
    sidecar = json.loads(sidecar_path(out).read_text())
    report = {"model": str(out), "images": str(images), "masks": str(masks), **sidecar, "diameter": diameter,
              "validation_fraction": validation_fraction, "train_names": [names[i] for i in train_idx],
              "validation_names": [names[i] for i in val_idx], "validation": scores}
    with atomic_path(sidecar_path(out)) as target:
        target.write_text(json.dumps(report, indent=2))
    if scores:
        log(f"validation (held out): AP@0.5 = {scores['pooled']['ap@0.5']:.3f}, "
            f"AP@0.75 = {scores['pooled']['ap@0.75']:.3f} over {len(val_idx)} images")
    return report
