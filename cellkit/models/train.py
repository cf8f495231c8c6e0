"""Training: SimCLR, BYOL, autoencoder, MAE, weak supervision, PCA and the random-init control, on a cells.zarr.

`train` writes a model folder (see `checkpoint`): ``config.json`` (every option, the channels,
the per-channel normalization computed from the data, versions, per-epoch loss and speed),
``model.safetensors`` (after every epoch) and ``checkpoint.pt`` (model + optimizer, for
``resume=True``). On the CPU, a seed gives identical weights run after run, and an interrupted
run resumed from its last epoch ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .._logging import get_logger
from .augment import AugmentConfig, augment
from .checkpoint import (CONFIG, check_channels, load_checkpoint, model_files_exist, read_config, remove_model_files,
                         save_checkpoint, save_weights, write_json)
from .data import CellChunks, cell_view_size, channel_stats, group_scale, iter_batches, model_scale
from .encoders import build_model
from .options import METHOD_ALIASES, RECORDED_KEYS, changed_options, default_config

logger = get_logger(__name__)

# An epoch whose embeddings of one batch spread less than this (`embedding_spread`) logs a collapse warning.
COLLAPSE_SPREAD = 0.05


def weak_labels(cells, columns) -> tuple[np.ndarray, list[str]]:
    """Class index per cell (int64, store order) and the class names: the distinct values of the obs ``columns``
    (weak supervision's treatments, SimCLR's ``positive_by`` and the groups of both)."""
    from ..io.cells import open_cells, read_obs

    obs = read_obs(open_cells(cells))
    missing = [c for c in columns if c not in obs]
    if missing:
        raise ValueError(f"the cells store's obs has no column(s) {missing}; it has {list(obs)}")
    names = obs[list(columns)].astype(str).agg("@".join, axis=1)
    classes = sorted(names.unique())
    return names.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64), classes


def _auto_columns(cells, value, columns: list[str], what: str):
    """``value`` as it is, or for ``"auto"``: ``columns`` when the store's obs has them all, else None (logged)."""
    if value != "auto":
        return value
    from ..io.cells import open_cells, read_obs

    if set(columns) <= set(read_obs(open_cells(cells))):
        return columns
    logger.info(f"{what} auto: the store's obs has no {columns}; {what} is off")
    return None


def _weak_group(cells, group):
    """The weak groups to train with: ``"auto"`` -> ``["batch"]`` when the store's obs has 2+ batches, else None."""
    if group != "auto":
        return group
    from ..io.cells import open_cells, read_obs

    obs = read_obs(open_cells(cells))
    if "batch" in obs and obs["batch"].nunique() > 1:
        return ["batch"]
    logger.info("weak_group auto: the store has no obs 'batch' with 2+ values; contrasting all cells together")
    return None


def _lr_at(config: dict, step: int, total: int, steps_per_epoch: int) -> float:
    """Linear warm-up over ``warmup_epochs`` (independent of ``total``), then a cosine to 0 at step ``total``."""
    warm = int(config.get("warmup_epochs") or 0) * steps_per_epoch
    if step < warm:
        return config["lr"] * (step + 1) / warm
    return config["lr"] * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _training_chunks(data: CellChunks, max_cells) -> list[int]:
    if not max_cells or max_cells >= data.n_cells:
        return list(range(data.n_chunks))
    n_take = max(1, -(-int(max_cells) // data.chunk_size))
    return np.unique(np.linspace(0, data.n_chunks - 1, n_take).round().astype(int)).tolist()


def train(cells, out_dir, *, method: str = "simclr", config: dict | None = None, resume: bool = False,
          overwrite: bool = False, device=None, progress=None) -> Path:
    """Train an encoder of ``method`` on the crops of a complete cells.zarr; return ``out_dir``.

    Parameters
    ----------
    cells : path of the cells.zarr.
    out_dir : model folder, written as described in this module.
    method : 'simclr', 'byol', 'autoencoder', 'mae' (needs transformers), 'weak' (treatment labels of the
        obs columns ``weak_label``), 'pixel_pca' (PCA of the crop pixels; 'pca' is accepted) or
        'random' (no training: the seeded init).
    config : overrides of `default_config` (or a full saved config).
    resume : continue the run in ``out_dir`` from its last completed epoch (its saved config
        is used; ``config`` may only change ``epochs`` (raising it changes the learning-rate schedule)
        and ``num_workers``).
    overwrite : replace an existing model folder. Without it (and without ``resume``) an
        existing one is refused.
    progress : ``progress(epoch, epochs, step, steps, loss)`` after each step.
    Each epoch's loss and speed go to ``logging.getLogger("cellkit")``.
    """
    out_dir = Path(out_dir)
    method = METHOD_ALIASES.get(method, method)
    device = _device(device)
    log = logger.info
    if resume:
        saved = read_config(out_dir)
        extra = changed_options(saved, config or {})
        if set(extra) - {"epochs", "num_workers"}:
            raise ValueError(f"--resume continues the saved run; only epochs and num_workers may change, but "
                             f"{sorted(set(extra) - {'epochs', 'num_workers'})} differ from it")
        config = {**saved, **extra, "complete": False}
        method = config["method"]
        state = load_checkpoint(out_dir)
    else:
        if model_files_exist(out_dir):
            if not overwrite:
                raise FileExistsError(f"{out_dir} already holds a model; use --resume to continue it or --overwrite")
            remove_model_files(out_dir)
        config = default_config(method, **{k: v for k, v in (config or {}).items() if k not in RECORDED_KEYS})
        state = None
    out_dir.mkdir(parents=True, exist_ok=True)

    data = CellChunks(cells)
    if resume:
        check_channels(config["channels"], data.channels, where=f"the cells store {cells}")
        scale = model_scale(cells, config)
    else:
        config["norm_by"], scale = _auto_columns(cells, config["norm_by"], ["plate"], "norm_by"), None
        if config["norm_by"]:
            scale, config["norm_reference"] = group_scale(cells, config["norm_by"], control=config["norm_control"])
        mean, std = channel_stats(cells, max_cells=config["stats_cells"], scale=scale)
        config.update(channels=data.channels, crop_size=data.crop_size, norm_mean=mean, norm_std=std,
                      cells=str(cells), epochs_done=0, history=[], complete=False, cellkit_version=__version__,
                      torch_version=str(torch.__version__))
        if config["augment"]["view_size"] == "auto":
            size = cell_view_size(cells, max_cells=config["stats_cells"], center=config["augment"]["center"])
            config["augment"]["view_size"] = config["view_size_measured"] = size
        if method == "simclr":
            positive_by = _auto_columns(cells, config["positive_by"], ["plate", "well"], "positive_by")
            if not positive_by and config["contrast_within"] not in (None, "auto"):
                raise ValueError("contrast_within needs positive_by (the cells' classes); this run has none")
            within = positive_by and _auto_columns(cells, config["contrast_within"], ["plate"], "contrast_within")
            config.update(positive_by=positive_by, contrast_within=within)
            if positive_by:
                weak_labels(cells, positive_by + (within or []))  # the columns exist (a clear error now, not later)
        if method == "weak":
            config["weak_classes"] = weak_labels(cells, config["weak_label"])[1]
            config["weak_group"] = _weak_group(cells, config["weak_group"])
            config["weak_group_classes"] = weak_labels(cells, config["weak_group"])[1] if config["weak_group"] else None
            if config.get("weak_adversary") and not config["weak_group_classes"]:
                logger.info("weak_adversary: no weak groups on this store; training without the batch adversary")
    aug = AugmentConfig.from_dict(config["augment"])
    train_data = CellChunks(cells, mean=config["norm_mean"], std=config["norm_std"],
                            chunks=_training_chunks(data, config["max_cells"]), masks=aug.needs_masks, scale=scale)
    config["n_train_cells"] = train_data.n_rows()
    torch.manual_seed(config["seed"])

    if method in ("pixel_pca", "pca"):
        from .pca import fit_pca

        start = time.perf_counter()
        model = fit_pca(train_data, config, num_workers=config["num_workers"],
                        progress=lambda d, n: progress and progress(1, 1, d, n, float("nan")))
        seconds = time.perf_counter() - start
        config.update(epochs=1, epochs_done=1, history=[{"epoch": 1, "seconds": seconds,
                                                         "cells_per_s": config["n_train_cells"] / seconds}])
        return _finish(model, config, out_dir, log)
    if method == "random":
        model = build_model("random", len(data.channels), config)
        config.update(epochs=0, epochs_done=0)
        return _finish(model, config, out_dir, log)

    model = build_model(method, len(data.channels), config).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config["lr"], weight_decay=config["weight_decay"])
    first_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch = int(state["epoch"])
    steps = train_data.n_rows() // config["batch_size"]
    if steps < 1:
        raise ValueError(f"{train_data.n_rows()} cells is fewer than one batch of {config['batch_size']}; "
                         "lower batch_size")
    targets = _contrast_targets(cells, config, device)
    for epoch in range(first_epoch, config["epochs"]):
        start, start_cpu = time.perf_counter(), time.process_time()
        losses, last = _train_epoch(model, optimizer, train_data, config, epoch=epoch, steps=steps, device=device,
                                    progress=progress, targets=targets)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        n_seen = len(losses) * config["batch_size"]
        spread, dims = _spread_of(model, last)
        config["history"].append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": seconds,
                                  "cpu_seconds": cpu_seconds, "cells_per_s": n_seen / seconds, "spread": spread,
                                  "effective_dims": dims})
        if spread < COLLAPSE_SPREAD:
            logger.warning(f"epoch {epoch + 1}: the embeddings of one batch have collapsed (spread {spread:.3f} < "
                           f"{COLLAPSE_SPREAD}; effective dimensions {dims:.1f}): check lr, ema, temperature")
        config["epochs_done"] = epoch + 1
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1},
                        out_dir)
        config["weights_sha256"] = save_weights(model, out_dir)
        config["complete"] = epoch + 1 == config["epochs"]
        write_json(config, out_dir / CONFIG)
        log(f"epoch {epoch + 1}/{config['epochs']}: loss {np.mean(losses):.4f}, {n_seen / seconds:.0f} crops/s")
    if first_epoch >= config["epochs"]:  # resumed a finished run: nothing left to train
        return _finish(model, config, out_dir, log)
    return out_dir


def embedding_spread(z: torch.Tensor) -> tuple[float, float]:
    """How spread a batch of embeddings ``z`` (B, D) is: the mean per-dimension std of the unit-length rows times
    sqrt(D) (about 1 when they fill the sphere evenly, 0 when collapsed to one point), and the effective number of
    dimensions (participation ratio of the covariance eigenvalues: 1 when all variance lies along one direction)."""
    z = z.double()
    spread = float(torch.nn.functional.normalize(z, dim=1).std(0).mean() * math.sqrt(z.shape[1]))
    ev = torch.linalg.eigvalsh(torch.cov(z.T)).clamp(min=0)
    dims = float(ev.sum() ** 2 / (ev ** 2).sum()) if ev.sum() > 0 else 0.0
    return spread, dims


@torch.no_grad()
def _spread_of(model, views: torch.Tensor) -> tuple[float, float]:
    """`embedding_spread` of the encoder's embeddings of ``views`` (eval mode; no weights or statistics change)."""
    model.eval()
    try:
        return embedding_spread(model.embed(views).float().cpu())
    finally:
        model.train()


def _contrast_columns(config: dict) -> tuple[list | None, list | None]:
    """The obs columns whose values make each cell's class (its positives) and group (its negatives): weak's
    ``weak_label`` / ``weak_group``, SimCLR's ``positive_by`` / ``contrast_within``; None for the others (and for
    models saved before the options)."""
    if config["method"] == "weak":
        return config["weak_label"], config.get("weak_group")
    if config["method"] == "simclr":
        return config.get("positive_by"), config.get("contrast_within")
    return None, None


def _contrast_targets(cells, config: dict, device) -> tuple:
    """``(labels, groups, allowed)`` of the store's cells for the loss (`_contrast_columns`; read once per run):
    int64 class and group per cell (store order) and bool ``(n_groups, n_classes)``, the classes in each group;
    None where the method has none."""
    labels = groups = allowed = None
    label_by, group_by = _contrast_columns(config)
    if label_by:
        index, classes = weak_labels(cells, label_by)
        if config["method"] == "weak" and classes != list(config["weak_classes"]):
            raise ValueError("the store's treatment classes differ from the model's weak_classes")
        labels = torch.from_numpy(index)
        if group_by:
            group_index = weak_labels(cells, group_by)[0]
            groups = torch.from_numpy(group_index)
            allowed = np.zeros((group_index.max() + 1, len(classes)), dtype=bool)
            allowed[group_index, index] = True  # the classes present in each group
            allowed = torch.from_numpy(allowed).to(device)
    return labels, groups, allowed


def _train_epoch(model, optimizer, data: CellChunks, config: dict, *, epoch: int, steps: int, device, progress,
                 targets: tuple) -> tuple[list[float], torch.Tensor]:
    """One pass over ``data`` (``steps`` full batches, each seen as two augmented views; ``targets`` from
    `_contrast_targets`); returns the losses and the first view of the last batch."""
    method, total = config["method"], steps * config["epochs"]
    aug = AugmentConfig.from_dict(config["augment"])
    offset = np.asarray(config["norm_mean"]) / np.asarray(config["norm_std"])
    labels, groups, allowed = targets
    amp = config["amp"] and device.type == "cuda"
    model.train()
    # Everything random in an epoch derives from (seed, epoch): resuming needs no RNG state.
    shuffle = torch.Generator().manual_seed(config["seed"] * 1_000_003 + epoch)
    views = torch.Generator(device=device).manual_seed(config["seed"] * 1_000_003 + epoch + 7919)
    batches = iter_batches(data, config["batch_size"], shuffle=True, generator=shuffle, drop_last=True,
                           num_workers=config["num_workers"], buffer_cells=config["shuffle_cells"])
    losses = []
    for step, batch in enumerate(batches):
        x, rows = batch[0], batch[-1]
        masks = batch[1].to(device) if len(batch) == 3 else None
        k = epoch * steps + step
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(config, k, total, steps)
        x = x.to(device, non_blocking=True)
        v1 = augment(x, aug, config["input_size"], views, masks=masks, offset=offset)
        v2 = (augment(x, aug, config["input_size"], views, masks=masks, offset=offset)
              if method not in ("autoencoder", "mae") else None)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if labels is None:
                loss = model.loss(v1, v2)
            elif groups is None:
                loss = model.loss(v1, v2, labels[rows].to(device))
            else:
                loss = model.loss(v1, v2, labels[rows].to(device), groups[rows].to(device), allowed)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1}, step {step + 1} (loss {loss.item()}); "
                                     "lower lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if method == "byol":  # target EMA rises from config["ema"] to 1 along a cosine
            model.ema = 1 - (1 - config["ema"]) * (math.cos(math.pi * k / total) + 1) / 2
            model.update_target()
        losses.append(loss.item())
        if progress:
            progress(epoch + 1, config["epochs"], step + 1, steps, losses[-1])
    return losses, v1.detach()


def _finish(model, config: dict, out_dir: Path, log) -> Path:
    config["weights_sha256"] = save_weights(model, out_dir)
    config["complete"] = True
    write_json(config, out_dir / CONFIG)
    log(f"{config['method']} model written to {out_dir}")
    return out_dir
