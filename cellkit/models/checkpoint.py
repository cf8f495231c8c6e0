"""The model folder: ``config.json`` + ``model.safetensors`` (+ ``checkpoint.pt`` while training).

Loading never executes code from a file: weights are read with safetensors, training
checkpoints with ``torch.load(weights_only=True)``, configs as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .._atomic import atomic_path
from ..io.provenance import file_sha256

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.pt"


class ChannelMismatchError(ValueError):
    """Crops whose channels (names or order) differ from those a model was trained on."""


class IncompleteModelError(RuntimeError):
    """A model folder whose training did not finish."""


def check_channels(model_channels, store_channels, *, where: str = "the cells store") -> None:
    """Raise `ChannelMismatchError` unless the two channel lists are equal, in order."""
    if list(model_channels) != list(store_channels):
        raise ChannelMismatchError(
            f"channel mismatch: the model was trained on channels {list(model_channels)} (in this order) but "
            f"{where} has {list(store_channels)}. Reorder the channels when building the store, or train a "
            "model on this channel order.")


def write_json(data: dict, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


def read_config(model_dir) -> dict:
    path = Path(model_dir) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"no model at {model_dir}: {CONFIG} is missing")
    return json.loads(path.read_text())


def save_weights(model: torch.nn.Module, model_dir) -> str:
    """Write the state dict as safetensors (atomically); return its sha256."""
    path = Path(model_dir) / WEIGHTS
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return file_sha256(path)


def save_checkpoint(state: dict, model_dir) -> None:
    """Training state (tensors, numbers, strings, lists, dicts only), written atomically."""
    with atomic_path(Path(model_dir) / CHECKPOINT) as tmp:
        torch.save(state, tmp)


def load_checkpoint(model_dir) -> dict:
    path = Path(model_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"nothing to resume in {model_dir}: {CHECKPOINT} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for files that are not checkpoints
        from ..errors import UnreadableFileError, weights_reason

        raise UnreadableFileError(f"{path} is not a cellkit checkpoint: {weights_reason(err)}",
                                  f"delete it and train again without --resume (or restore {CHECKPOINT} from "
                                  "a copy you trust)") from None


def load_model(model_dir, *, device: str | torch.device = "cpu", allow_incomplete: bool = False):
    """Build a trained model from its folder, in eval mode.

    Returns ``(model, config)``; ``model.embed(x)`` maps normalized ``(B, C, S, S)`` float32 crops
    (``S = config["input_size"]``) to ``(B, D)``. Raises `IncompleteModelError` when training
    did not finish (unless ``allow_incomplete``) and ``ValueError`` when the weights do not match
    the config or their checksum.
    """
    from .encoders import build_model
    from .pca import PCAModel

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    if not config.get("complete") and not allow_incomplete:
        raise IncompleteModelError(
            f"{model_dir} holds an unfinished training run ({config.get('epochs_done', 0)} of "
            f"{config.get('epochs')} epochs). Finish it with `cellkit train ... --resume`.")
    weights = model_dir / WEIGHTS
    if config.get("weights_sha256") and file_sha256(weights) != config["weights_sha256"]:
        raise ValueError(f"{weights} does not match the checksum in {CONFIG}: the file was changed or is damaged")
    n_channels = len(config["channels"])
    if config["method"] in ("pixel_pca", "pca"):
        model = PCAModel(n_channels, config)
    else:
        model = build_model(config["method"], n_channels, config)
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{weights} does not fit the model described in {CONFIG}: {err}") from None
    return model.to(device).eval(), config


MODEL_FILES = (CONFIG, WEIGHTS, CHECKPOINT)


def model_files_exist(model_dir) -> bool:
    return any(os.path.exists(Path(model_dir) / name) for name in MODEL_FILES)


def remove_model_files(model_dir) -> None:
    """Remove a model folder's files (config first, so a half-removed folder reads as no model)."""
    for name in MODEL_FILES:
        Path(model_dir, name).unlink(missing_ok=True)
