"""cellkit's resumable Cellpose training loop.

Cellpose's own parts: the network (``CPnet``, any channel widths via `cellpose_backend.new_model`),
its flows (``dynamics.labels_to_flows``, see `train_data`), its augmentation
(``transforms.random_rotate_and_resize``: per-image rescale so objects have ``diam_mean``, then a
random scale, rotation, flip and crop), its loss (``train._loss_fn_seg``), its learning-rate
schedule (linear warm-up over 10 epochs, halvings at the end) and its mask recovery for the
held-out AP. What cellkit adds: a checkpoint file holding weights, optimizer state, the epoch and
every RNG state (python, numpy, torch), so a run stopped and resumed reaches the same weights as
an uninterrupted one on the CPU; the best held-out weights; a learning-curve JSON.

Checkpoint (``torch.save`` dict, written atomically): ``format``, ``config`` (`TrainConfig` as a
dict), ``epoch`` (next epoch to run), ``net``, ``optimizer``, ``rng``, ``history`` (one entry per
evaluation), ``best`` (``epoch``, ``ap@0.5``, ``net``), ``train_names``, ``validation_names``,
``diam_labels``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import atomic_path

FORMAT = "cellkit-cellpose-checkpoint/1"


@dataclass
class TrainConfig:
    """Settings of one run. ``epochs`` may grow on resume (the schedule is recomputed); the others
    are fixed for the run's lifetime."""

    nbase: list = field(default_factory=lambda: [2, 16, 32, 64, 128])
    diam_mean: float = 17.0
    patch_size: int = 128
    batch_size: int = 8
    images_per_epoch: int = 64
    epochs: int = 100
    learning_rate: float = 0.005
    weight_decay: float = 1e-5
    scale_range: float = 0.5
    seed: int = 0
    eval_every: int = 10
    checkpoint_every: int = 5


FIXED = ("nbase", "diam_mean", "patch_size", "batch_size", "images_per_epoch", "learning_rate", "weight_decay",
         "scale_range", "seed")


def cellpose_lr(epochs: int, learning_rate: float) -> np.ndarray:
    """Cellpose 3's per-epoch rate (``train.train_seg``): 10-epoch linear warm-up, then constant;
    over 100 epochs halved every 5 of the last 50, over 300 every 10 of the last 100."""
    lr = np.linspace(0, learning_rate, 10)
    lr = np.append(lr, learning_rate * np.ones(max(0, epochs - 10)))
    if epochs > 300:
        lr = lr[:-100]
        for _ in range(10):
            lr = np.append(lr, lr[-1] / 2 * np.ones(10))
    elif epochs > 100:
        lr = lr[:-50]
        for _ in range(10):
            lr = np.append(lr, lr[-1] / 2 * np.ones(5))
    return lr


def _rng_state() -> dict:
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _state_copy(net) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def save_checkpoint(path, state: dict) -> None:
    """Write a checkpoint atomically (a reader never sees half a file)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by `train`; raises ValueError for other files.

    Loaded with ``weights_only=True`` (no arbitrary code from an untrusted file); only numpy's
    plain arrays (numpy's RNG state) are allowed beside torch's own types.
    """
    import pickle

    import torch

    numpy_arrays = [np.zeros(1).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(numpy_arrays):
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path} is not a cellkit Cellpose training checkpoint ({FORMAT}): "
                         f"it holds objects other than tensors and arrays") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cellkit Cellpose training checkpoint ({FORMAT})")
    return state


def curve_path(checkpoint) -> Path:
    """The learning-curve JSON beside a checkpoint: ``<checkpoint>.curve.json``."""
    return Path(str(checkpoint) + ".curve.json")


def model_for(state_or_config, net_state: dict | None = None):
    """A `cellpose.models.CellposeModel` on the CPU with the run's architecture (and weights)."""
    from . import cellpose_backend as cpb

    cfg = state_or_config["config"] if "config" in state_or_config else state_or_config
    model = cpb.new_model(cfg["nbase"], cfg["diam_mean"], gpu=False)
    if net_state is not None:
        model.net.load_state_dict(net_state)
        model.diam_labels = float(model.net.diam_labels.item())
    return model


def validate(model, images: list, masks: list, diameters, names: list, **eval_options) -> dict:
    """Pooled and per-image AP of ``model`` on held-out pairs, each image at its masks' diameter."""
    from .cellpose_backend import run_cellpose
    from .matching import score_images

    model.net.eval()
    preds = [run_cellpose(model, [im], diameter=float(d), **eval_options)[0] for im, d in zip(images, diameters)]
    return score_images(list(zip(masks, preds)), names=names)


def train(data, config: TrainConfig, checkpoint, *, validation=None, resume: bool = False,
          stop_after_epoch: int | None = None, init: dict | None = None, log=print) -> dict:
    """Train (or resume) a CPnet; returns the final checkpoint dict.

    Parameters
    ----------
    data
        `train_data.TrainingSet` of the training images.
    config
        `TrainConfig`; on resume, only ``epochs``, ``eval_every`` and ``checkpoint_every`` may differ
        from the checkpoint's.
    checkpoint
        Checkpoint file, overwritten every ``checkpoint_every`` epochs, at every evaluation and at
        the end; ``<checkpoint>.curve.json`` gets the learning curve.
    validation
        ``(images, masks, names)`` held out: pooled AP@0.5/0.75 every ``eval_every`` epochs (each
        image at its masks' diameter); the best weights by AP@0.5 are kept. None: no evaluation.
    stop_after_epoch
        Stop (with a checkpoint) after this many epochs in total, to split a run into pieces.
    init
        Initial weights (a CPnet state dict of the same architecture) instead of random ones.
    """
    import torch
    from cellpose.train import _loss_fn_seg
    from cellpose.transforms import random_rotate_and_resize
    from cellpose.utils import diameters as cp_diameters

    checkpoint = Path(checkpoint)
    if resume:
        state = load_checkpoint(checkpoint)
        old = state["config"]
        changed = [k for k in FIXED if old[k] != asdict(config)[k]]
        if changed:
            raise ValueError(f"cannot resume {checkpoint} with different {', '.join(changed)}: the checkpoint has "
                             + ", ".join(f"{k}={old[k]}" for k in changed))
        if state["train_names"] != list(data.names):
            raise ValueError(f"cannot resume {checkpoint}: its training images differ from these "
                             f"({len(state['train_names'])} against {len(data.names)})")
        if config.epochs < state["epoch"]:
            raise ValueError(f"{checkpoint} is already at epoch {state['epoch']}, past --epochs {config.epochs}")
        state["config"] = asdict(config)
        model = model_for(state, state["net"])
        _set_rng_state(state["rng"])
    else:
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        model = model_for(asdict(config), init)
        state = {"format": FORMAT, "config": asdict(config), "epoch": 0, "history": [], "best": None,
                 "train_names": list(data.names),
                 "validation_names": list(validation[2]) if validation else [],
                 "diam_labels": float(np.median(data.diameters))}
        model.net.diam_labels.data = torch.tensor([state["diam_labels"]], dtype=torch.float32)
    net = model.net
    net.mkldnn = False  # trained as plain torch; inference copies may use MKL-DNN
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    if resume:
        optimizer.load_state_dict(state["optimizer"])
    val_diams = [max(5.0, float(cp_diameters(m)[0])) for m in validation[1]] if validation else None
    lr = cellpose_lr(config.epochs, config.learning_rate)
    end = config.epochs if stop_after_epoch is None else min(config.epochs, stop_after_epoch)
    n, rescale = len(data.images), data.diameters / config.diam_mean
    curve = curve_path(checkpoint)

    def save():
        state.update(net=_state_copy(net), optimizer=optimizer.state_dict(), rng=_rng_state())
        save_checkpoint(checkpoint, state)

    start, losses = time.perf_counter(), []
    for epoch in range(state["epoch"], end):
        for group in optimizer.param_groups:
            group["lr"] = float(lr[epoch])
        net.train()
        order = np.random.choice(n, size=config.images_per_epoch)
        epoch_loss = 0.0
        for k in range(0, config.images_per_epoch, config.batch_size):
            inds = order[k:k + config.batch_size]
            imgs = [data.images[i] for i in inds]
            flows = [data.flows[i].astype(np.float32) for i in inds]
            x, y = random_rotate_and_resize(imgs, Y=flows, rescale=rescale[inds], scale_range=config.scale_range,
                                            xy=(config.patch_size, config.patch_size))[:2]
            x = np.concatenate([x, np.zeros_like(x)], axis=1)[:, :config.nbase[0]]  # grey + empty 2nd channel
            out = net(torch.from_numpy(x))[0]
            loss = _loss_fn_seg(y, out, torch.device("cpu"))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(inds)
        losses.append(epoch_loss / config.images_per_epoch)
        state["epoch"] = epoch + 1
        evaluate = validation is not None and (state["epoch"] % config.eval_every == 0 or state["epoch"] == end)
        if evaluate or state["epoch"] % config.checkpoint_every == 0 or state["epoch"] == end:
            entry = {"epoch": state["epoch"], "step": state["epoch"] * -(-config.images_per_epoch // config.batch_size),
                     "train_loss": float(np.mean(losses)), "lr": float(lr[epoch]),
                     "seconds": round(time.perf_counter() - start, 1), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            losses = []
            if evaluate:
                t0 = time.perf_counter()
                # a copy: Cellpose's inference converts a CPU network to MKL-DNN in place
                scores = validate(model_for(state, _state_copy(net)), validation[0], validation[1], val_diams, validation[2])
                entry.update({"val_ap@0.5": scores["pooled"]["ap@0.5"], "val_ap@0.75": scores["pooled"]["ap@0.75"],
                              "val_seconds": round(time.perf_counter() - t0, 1)})
                best = state["best"]
                if best is None or entry["val_ap@0.5"] >= best["ap@0.5"]:
                    state["best"] = {"epoch": state["epoch"], "ap@0.5": entry["val_ap@0.5"],
                                     "ap@0.75": entry["val_ap@0.75"], "net": _state_copy(net)}
            state["history"].append(entry)
            save()
            _write_curve(curve, state)
            if log:
                log(json.dumps(entry))
    if state["epoch"] == end and (not state["history"] or state["history"][-1]["epoch"] != end):
        save()
    return state


def _write_curve(path: Path, state: dict) -> None:
    best = state["best"]
    record = {"config": state["config"], "n_train": len(state["train_names"]),
              "n_validation": len(state["validation_names"]), "validation_names": state["validation_names"],
              "best": None if best is None else {k: v for k, v in best.items() if k != "net"},
              "history": state["history"]}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
