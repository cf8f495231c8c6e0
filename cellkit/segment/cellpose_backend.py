"""Cellpose 3 models from the local cache only: never a silent download.

Cellpose downloads missing weights on first use; these machines (and many clusters) have no
network, so cellkit resolves a model name to its cached file first and fails with a clear
message when it is absent.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

# Cache file names of Cellpose 3's built-in models (cellpose.models.model_path).
BUILTIN_FILES = {"nuclei": "nucleitorch_0", "cyto": "cytotorch_0", "cyto2": "cyto2torch_0", "cyto3": "cyto3"}
SIZE_FILES = {"nuclei": "size_nucleitorch_0.npy", "cyto3": "size_cyto3.npy"}


class WeightsNotFoundError(FileNotFoundError):
    """Cellpose weights are neither in the local cache nor at the given path."""


def cellpose_model_dir() -> Path:
    """Cellpose's weight cache: ``$CELLPOSE_LOCAL_MODELS_PATH`` or ``~/.cellpose/models``."""
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(env) if env else Path.home() / ".cellpose" / "models"


def resolve_model(model: str | os.PathLike) -> Path:
    """Path of a Cellpose model given by built-in name (``nuclei``, ``cyto3``...) or by path.

    Raises `WeightsNotFoundError` that says how to provide the weights.
    """
    path = Path(model)
    if path.is_file():
        return path
    name = str(model)
    if name in BUILTIN_FILES:
        cached = cellpose_model_dir() / BUILTIN_FILES[name]
        if cached.is_file():
            return cached
        raise WeightsNotFoundError(
            f"Cellpose weights for model {name!r} are not in the local cache ({cached} is missing) and "
            f"cellkit does not download them. Provide them by copying "
            f"https://www.cellpose.org/models/{BUILTIN_FILES[name]} to {cached} (or set "
            f"CELLPOSE_LOCAL_MODELS_PATH to a folder holding it), pass --model PATH to a model trained with "
            f"`cellkit train-segmenter`, or use the classical backend (--backend classical).")
    raise WeightsNotFoundError(
        f"no Cellpose model at {path}: give a built-in name ({', '.join(BUILTIN_FILES)}) with its weights "
        f"in {cellpose_model_dir()}, a path to a model file (e.g. from `cellkit train-segmenter`), "
        f"or use the classical backend (--backend classical).")


def weights_available(model: str | os.PathLike) -> bool:
    """True when `resolve_model` finds the model's weights."""
    try:
        resolve_model(model)
        return True
    except WeightsNotFoundError:
        return False


def default_gpu() -> bool:
    """True when torch sees a CUDA GPU."""
    import torch

    return bool(torch.cuda.is_available())


@lru_cache(maxsize=4)
def load_model(path: str, gpu: bool):
    """A `cellpose.models.CellposeModel` loaded from a weight file (cached per process)."""
    from cellpose import models

    name = Path(path).name
    builtin = name in BUILTIN_FILES.values()
    kwargs = {"diam_mean": 17.0} if name == BUILTIN_FILES["nuclei"] else {}
    model = models.CellposeModel(gpu=gpu, pretrained_model=str(path), **kwargs)
    model.cellkit_builtin = builtin
    return model


def model_diameter(model) -> float:
    """Diameter (px) the model is used at when none is given: its training objects' mean
    diameter for a custom model, its reference diameter for a built-in one."""
    if getattr(model, "cellkit_builtin", False):
        return float(model.diam_mean)
    diam = float(getattr(model, "diam_labels", 0) or 0)
    return diam if diam > 0 else float(model.diam_mean)


def run_cellpose(model, images: list[np.ndarray], *, diameter: float | str | None, channels=(0, 0),
                 batch_size: int = 8, flow_threshold: float = 0.4, cellprob_threshold: float = 0.0,
                 min_size: int = 15) -> list[np.ndarray]:
    """Segment a batch of images with one Cellpose model.

    Parameters
    ----------
    images
        (H, W) single-channel images, or (2, H, W) (cytoplasm, nuclei) stacks with ``channels=(1, 2)``.
    diameter
        Object diameter in px; None: the model's own (`model_diameter`); ``"auto"``: measured per
        image, by a first pass at the model's diameter whose masks' median diameter sets the second.

    Returns
    -------
    list of (H, W) uint32 label images.
    """
    if not images:
        return []
    options = dict(batch_size=batch_size, channels=list(channels), channel_axis=0 if images[0].ndim == 3 else None,
                   flow_threshold=flow_threshold, cellprob_threshold=cellprob_threshold, min_size=min_size)
    images = [np.asarray(im, np.float32) for im in images]
    if diameter == "auto":
        from cellpose.utils import diameters

        first = run_cellpose(model, images, diameter=None, channels=channels, batch_size=batch_size,
                             flow_threshold=flow_threshold, cellprob_threshold=cellprob_threshold, min_size=min_size)
        measured = [diameters(m)[0] if m.max() > 0 else 0.0 for m in first]
        return [run_cellpose(model, [im], diameter=d, **{k: v for k, v in options.items() if k != "channel_axis"})[0]
                if d > 0 else m for im, m, d in zip(images, first, measured)]
    if isinstance(diameter, str):
        raise ValueError(f"diameter must be a number, None or 'auto', got {diameter!r}")
    masks, _flows, _styles = model.eval(images, diameter=diameter or model_diameter(model), **options)
    return [np.asarray(m, np.uint32) for m in masks]
