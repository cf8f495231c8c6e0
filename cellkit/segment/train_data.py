"""Training data for cellkit's Cellpose loop: normalized images, Cellpose flows (cached), diameters.

Flows are computed once per mask with Cellpose's own ``dynamics.labels_to_flows`` and kept in a
cache folder keyed by the mask's content hash and the Cellpose version, so later runs (and
resumed runs) skip the computation.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import atomic_path


def default_flow_cache() -> Path:
    """``$CELLKIT_FLOW_CACHE`` or ``~/.cache/cellkit/flows``."""
    env = os.environ.get("CELLKIT_FLOW_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cellkit" / "flows"


@dataclass
class TrainingSet:
    """Images ready for `cellpose.transforms.random_rotate_and_resize`.

    images : list of (1, H, W) float32 (channel first, as the augmentation expects), normalized to
        Cellpose's 1st-99th percentile range.
    flows : list of (3, H, W) float16: cell probability (0/1), Y flow, X flow (Cellpose's labels[1:]).
    diameters : (n,) float64, each image's median object diameter (Cellpose's ``utils.diameters``, >= 5).
    names : image names.
    """

    images: list
    flows: list
    diameters: np.ndarray
    names: list


def mask_flows(mask: np.ndarray, cache: Path | None = None) -> np.ndarray:
    """(3, H, W) float16 Cellpose training flows of an integer label image (cached by content)."""
    import cellpose
    import torch
    from cellpose import dynamics

    mask = np.ascontiguousarray(mask, dtype=np.int32)
    key = hashlib.sha1(mask.tobytes() + str(mask.shape).encode() + cellpose.version.encode()).hexdigest()
    path = cache / f"{key}.npy" if cache is not None else None
    if path is not None and path.is_file():
        return np.load(path)
    flow = dynamics.labels_to_flows([mask.copy()], device=torch.device("cpu"))[0]
    out = flow[1:].astype(np.float16)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, out)
    return out


def prepare(images: list, masks: list, names: list, cache: str | os.PathLike | None = "default",
            log=None) -> TrainingSet:
    """Normalize images, compute (or load) flows and diameters; drops pairs without objects."""
    from cellpose import transforms, utils

    cache = default_flow_cache() if cache == "default" else (Path(cache) if cache else None)
    ims, flows, diams, kept = [], [], [], []
    for k, (im, mk, name) in enumerate(zip(images, masks, names)):
        if mk.max() == 0:
            if log:
                log(f"skipping {name}: its mask has no objects")
            continue
        ims.append(transforms.normalize99(np.asarray(im, np.float32)).astype(np.float32)[np.newaxis])
        flows.append(mask_flows(mk, cache))
        diams.append(max(5.0, float(utils.diameters(mk)[0])))
        kept.append(name)
        if log and (k + 1) % 100 == 0:
            log(f"prepared {k + 1}/{len(images)} training images")
    if not kept:
        raise ValueError("no training image has any object in its mask")
    return TrainingSet(ims, flows, np.asarray(diams), kept)
