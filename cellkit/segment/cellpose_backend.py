"""Cellpose 3 models from the local cache only: never a silent download.

Cellpose downloads missing weights on first use; these machines (and many clusters) have no
network, so cellkit resolves a model name to its cached file first and fails with a clear
message when it is absent. Models trained by cellkit may use a narrower CPnet than Cellpose's
(``train_cellpose(nbase=...)``); `load_cellpose` builds the network their weights describe.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

# Cache file names of Cellpose 3's built-in models (cellpose.models.model_path).
BUILTIN_FILES = {"nuclei": "nucleitorch_0", "cyto": "cytotorch_0", "cyto2": "cyto2torch_0", "cyto3": "cyto3"}
SIZE_FILES = {"nuclei": "size_nucleitorch_0.npy", "cyto3": "size_cyto3.npy"}


# The nucleus model cellkit ships (models/ at the repository root, or $CELLKIT_MODELS): trained by
# `cellkit train-segmenter` on the DSB2018 stage-1 training fluorescence images (see models/README.md).
SHIPPED_NUCLEUS_MODEL = "dsb2018_train_nuclei_cellkit.cp"


def shipped_models_dir() -> Path:
    """``$CELLKIT_MODELS`` or the repository's ``models/`` folder."""
    env = os.environ.get("CELLKIT_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def shipped_nucleus_model() -> Path | None:
    """Path of the shipped cellkit nucleus model, None when it is not there."""
    path = shipped_models_dir() / SHIPPED_NUCLEUS_MODEL
    return path if path.is_file() else None


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


@lru_cache(maxsize=16)
def _sha256(path: str, mtime: float) -> str:
    from ..io.provenance import file_sha256

    return file_sha256(path)


def model_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a model file (cached per path and modification time)."""
    return _sha256(str(path), os.path.getmtime(path))


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


# Channel widths of the standard CPnet after its input channels (what CellposeModel builds).
STANDARD_NBASE = (32, 64, 128, 256)


class ModelArchitectureError(ValueError):
    """A weight file is not a Cellpose 3 CPnet, or disagrees with the architecture in its sidecar."""


def sidecar_path(path: str | os.PathLike) -> Path:
    """``<model>.json``, written beside a cellkit-trained model (training report and architecture)."""
    return Path(str(path) + ".json")


def architecture_of(state_dict) -> dict:
    """``{"nbase": [input channels, width 1, ...], "diam_mean": px}`` of a CPnet state dict.

    Raises `ModelArchitectureError` when the dict is not a Cellpose 3 CPnet.
    """
    first = "downsample.down.res_down_0.proj.1.weight"
    if first not in state_dict or "diam_mean" not in state_dict:
        raise ModelArchitectureError("not a Cellpose 3 CPnet weight file (no downsample.down.res_down_0 or "
                                     "diam_mean entry)")
    nbase, level = [int(state_dict[first].shape[1])], 0
    while (key := f"downsample.down.res_down_{level}.proj.1.weight") in state_dict:
        nbase.append(int(state_dict[key].shape[0]))
        level += 1
    return {"nbase": nbase, "diam_mean": float(state_dict["diam_mean"].reshape(-1)[0])}


def model_architecture(path: str | os.PathLike) -> dict:
    """Architecture of a weight file, read from the weights and checked against ``<model>.json``.

    Raises `ModelArchitectureError` when the sidecar's ``architecture`` disagrees with the weights
    (a model file replaced without its report, or the wrong report copied beside it).
    """
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for non-weight files
        from ..errors import weights_reason

        raise ModelArchitectureError(f"{path} is not a readable Cellpose weight file: {weights_reason(err)}") from None
    if not isinstance(state, dict):
        raise ModelArchitectureError(f"{path} is not a Cellpose weight file (no state dict)")
    try:
        found = architecture_of(state)
    except ModelArchitectureError as err:
        raise ModelArchitectureError(f"{path}: {err}") from None
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        recorded = json.loads(sidecar.read_text()).get("architecture")
        if recorded and list(recorded["nbase"]) != found["nbase"]:
            raise ModelArchitectureError(
                f"{sidecar} records a network with channel widths {recorded['nbase']} but {path} holds "
                f"{found['nbase']}: the model file and its report do not belong together")
    return found


STYLE_SIZE = 256  # cellpose.core.run_net stores each tile's style vector in an array this long


@lru_cache(maxsize=1)
def _narrow_cpnet():
    """A CPnet subclass whose returned style vector is zero-padded to `STYLE_SIZE`, so networks
    narrower than Cellpose's run through ``CellposeModel.eval``; layers and weights are CPnet's."""
    import torch.nn.functional as F
    from cellpose.resnet_torch import CPnet

    class NarrowCPnet(CPnet):
        def forward(self, data):
            out, style, downsampled = super().forward(data)
            return out, F.pad(style, (0, STYLE_SIZE - style.shape[1])), downsampled

    return NarrowCPnet


def new_model(nbase, diam_mean: float, gpu: bool):
    """A `cellpose.models.CellposeModel` with an untrained CPnet of channel widths ``nbase``
    (input channels first; Cellpose itself always builds ``[2, *STANDARD_NBASE]``)."""
    from cellpose import models

    nbase = [int(n) for n in nbase]
    if len(nbase) != 5 or min(nbase) < 1 or nbase[-1] > STYLE_SIZE:
        raise ModelArchitectureError(f"nbase must be input channels and 4 positive widths, the last at most "
                                     f"{STYLE_SIZE}; got {nbase}")
    model = models.CellposeModel(gpu=gpu, pretrained_model=False, diam_mean=diam_mean, nchan=nbase[0])
    model.net = _narrow_cpnet()(nbase, model.nclasses, sz=3, mkldnn=model.mkldnn, max_pool=True,
                                diam_mean=diam_mean).to(model.device)
    model.nbase = nbase
    return model


@lru_cache(maxsize=4)
def load_cellpose(path: str, gpu: bool):
    """A `cellpose.models.CellposeModel` loaded from a weight file (cached per process).

    Built-in models load as Cellpose does; any other file gets the network its weights describe
    (`model_architecture`), so cellkit-trained models of any width load.
    """
    from cellpose import models

    name = Path(path).name
    if name in BUILTIN_FILES.values():
        kwargs = {"diam_mean": 17.0} if name == BUILTIN_FILES["nuclei"] else {}
        model = models.CellposeModel(gpu=gpu, pretrained_model=str(path), **kwargs)
        model.cellkit_builtin = True
        return model
    arch = model_architecture(path)
    model = new_model(arch["nbase"], arch["diam_mean"], gpu)
    model.net.load_model(str(path), device=model.device)
    model.pretrained_model = str(path)
    model.diam_mean = float(model.net.diam_mean.item())
    model.diam_labels = float(model.net.diam_labels.item())
    model.cellkit_builtin = False
    model.cellkit_trained = sidecar_path(path).is_file()  # trained on images rescaled to diam_mean: auto size
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
                 min_size: int = 15, augment: bool = False) -> list[np.ndarray]:
    """Segment a batch of images with one Cellpose model.

    Parameters
    ----------
    images
        (H, W) single-channel images, or (2, H, W) (cytoplasm, nuclei) stacks with ``channels=(1, 2)``.
    diameter
        Object diameter in px; None: the model's own (`model_diameter`), or ``"auto"`` for a
        cellkit-trained model (trained over many object sizes); ``"auto"``: per (H, W) image, a
        first pass at the diameter of its foreground (`classical.foreground_diameter`; the model's
        diameter for other images, or, with a warning, when it has no foreground), and a second
        pass at the masks' median diameter when that differs by more than `AUTO_TOLERANCE`. A
        warning says when no diameter could be measured.
    augment
        Cellpose's test-time augmentation (overlapping tiles, flipped, averaged): about 4x slower.

    Returns
    -------
    list of (H, W) uint32 label images.
    """
    if not images:
        return []
    options = dict(batch_size=batch_size, channels=list(channels), channel_axis=0 if images[0].ndim == 3 else None,
                   flow_threshold=flow_threshold, cellprob_threshold=cellprob_threshold, min_size=min_size,
                   augment=augment)
    images = [np.asarray(im, np.float32) for im in images]
    if diameter is None and getattr(model, "cellkit_trained", False):
        diameter = "auto"  # a model trained over many object sizes: each image's own size
    if diameter == "auto":
        return [auto_diameter(model, im, k, **options)[1] for k, im in enumerate(images)]
    if isinstance(diameter, str):
        raise ValueError(f"diameter must be a number, None or 'auto', got {diameter!r}")
    masks, _flows, _styles = model.eval(images, diameter=diameter or model_diameter(model), **options)
    return [np.asarray(m, np.uint32) for m in masks]


AUTO_TOLERANCE = 1.2  # a second pass when the measured diameter is off the first pass's by more than 20 %


def auto_diameter(model, image: np.ndarray, k: int = 0, **options) -> tuple[float, np.ndarray]:
    """(diameter used, labels) of ``diameter="auto"`` for one image (see `run_cellpose`).

    Warns, never guesses silently, when the size cannot be estimated or measured.
    """
    import warnings

    from cellpose.utils import diameters

    options = {key: v for key, v in options.items() if key != "channel_axis"}
    first = model_diameter(model)
    if image.ndim == 2:
        from .classical import foreground_diameter

        estimate = foreground_diameter(image)
        if estimate > 0:
            first = max(5.0, estimate)
        else:
            warnings.warn(f"diameter='auto': image {k} has no foreground to estimate its object size from; "
                          f"first pass at the model's diameter {first:.1f} px", UserWarning, stacklevel=3)
    masks = run_cellpose(model, [image], diameter=first, **options)[0]
    if masks.max() == 0:
        warnings.warn(f"diameter='auto': no objects found in image {k} at {first:.1f} px, so its object size "
                      "could not be measured; pass --diameter PX if it has objects", UserWarning, stacklevel=3)
        return first, masks
    measured = float(diameters(masks)[0])
    if max(measured / first, first / measured) > AUTO_TOLERANCE:
        return measured, run_cellpose(model, [image], diameter=measured, **options)[0]
    return first, masks
