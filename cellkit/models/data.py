"""Lazy, chunk-aware reading of crops from a cells.zarr for training and embedding.

``images`` is chunked along cells (16 to hundreds per compressed chunk), so reading cells one at
a time would decompress each chunk many times. `CellChunks` is a map-style Dataset whose item is
a run of whole chunks (at least ``read_cells`` cells); a multi-worker DataLoader reads them in
parallel (each worker opens the store itself), and `iter_batches` shuffles cells across a buffer
of runs in the main process with a seeded generator, so the batches do not depend on the number
of workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .._logging import get_logger
from ..io.cells import open_cells

logger = get_logger(__name__)


class CellChunks(torch.utils.data.Dataset):
    """Chunks of ``images`` of a complete cells.zarr, read lazily.

    Parameters
    ----------
    path : cells.zarr
    mean, std : per-channel normalization ``(C,)``; crops come out as ``(x - mean) / std``.
        ``None``: raw values as float32.
    chunks : indices of the read units to serve (default: all).
    read_cells : cells per read unit, rounded up to whole store chunks (``chunk_size`` attribute).
    masks : also serve the masks.
    scale : per-cell channel factors ``(N, C)`` float32 applied to the raw values before ``mean`` / ``std``
        (`group_scale`: each plate's intensities brought to one reference). ``None``: none.

    Item ``i`` is ``(crops, rows)``: float32 tensor ``(n, C, S, S)`` and int64 tensor ``(n,)``
    of their row numbers in the store; with ``masks``, ``(crops, masks, rows)``, masks bool ``(n, 2, S, S)``
    (nucleus, cell).
    """

    def __init__(self, path, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 chunks: Sequence[int] | None = None, read_cells: int = 64, masks: bool = False,
                 scale: np.ndarray | None = None):
        root = open_cells(path)
        images = root["images"]
        self.path = str(path)
        self.n_cells = images.shape[0]
        store_chunk = images.chunks[0]
        self.chunk_size = store_chunk * max(1, -(-int(read_cells) // store_chunk))
        self.n_chunks = -(-self.n_cells // self.chunk_size)
        self.channels = list(root.attrs["channels"])
        self.crop_size = int(images.shape[-1])
        self.chunks = list(range(self.n_chunks)) if chunks is None else [int(c) for c in chunks]
        if self.chunks and not (0 <= min(self.chunks) and max(self.chunks) < self.n_chunks):
            raise IndexError(f"chunk indices out of range 0..{self.n_chunks - 1}")
        self.mean = None if mean is None else np.asarray(mean, np.float32)[:, None, None]
        self.std = None if std is None else np.asarray(std, np.float32)[:, None, None]
        self.masks = bool(masks)
        self.scale = None if scale is None else np.asarray(scale, np.float32)
        if self.scale is not None and self.scale.shape != (self.n_cells, len(self.channels)):
            raise ValueError(f"scale must be (cells, channels) = {(self.n_cells, len(self.channels))}, "
                             f"got {self.scale.shape}")
        self._images = self._masks = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.chunks)

    def n_rows(self) -> int:
        """Number of cells served."""
        return sum(self._bounds(c)[1] - self._bounds(c)[0] for c in self.chunks)

    def _bounds(self, chunk: int) -> tuple[int, int]:
        return chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, self.n_cells)

    def _array(self):
        # Opened once per process: a DataLoader worker never reuses its parent's handle.
        if self._images is None or self._pid != os.getpid():
            root = open_cells(self.path)
            self._images, self._masks, self._pid = root["images"], root["masks"], os.getpid()
        return self._images

    def __getitem__(self, i: int):
        start, stop = self._bounds(self.chunks[i])
        x = self._array()[start:stop].astype(np.float32)
        if self.scale is not None:
            x *= self.scale[start:stop, :, None, None]
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if self.masks:
            return torch.from_numpy(x), torch.from_numpy(self._masks[start:stop]), torch.arange(start, stop)
        return torch.from_numpy(x), torch.arange(start, stop)


def channel_stats(path, *, max_cells: int = 4096, scale: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the raw pixel values (times ``scale``, see `CellChunks`) of up to
    ``max_cells`` cells.

    The cells are whole chunks spread evenly over the store (deterministic). Returns two lists
    of length C. A channel with zero spread gets std 1.
    """
    data = CellChunks(path, scale=scale)
    n_take = max(1, min(data.n_chunks, -(-max_cells // data.chunk_size)))
    picks = np.unique(np.linspace(0, data.n_chunks - 1, n_take).round().astype(int))
    s1, s2, n = np.zeros(len(data.channels)), np.zeros(len(data.channels)), 0
    for c in picks:
        x = data[int(c)][0].double()
        s1 += x.sum(dim=(0, 2, 3)).numpy()
        s2 += (x ** 2).sum(dim=(0, 2, 3)).numpy()
        n += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
    std[std == 0] = 1.0
    return [float(v) for v in mean], [float(v) for v in std]


def group_scale(path, by: str | Sequence[str], *, control: str | None = "compound == 'DMSO'",
                reference: Sequence[float] | None = None) -> tuple[np.ndarray, list[float]]:
    """Per-cell channel factors that bring every group's (plate's) mean intensity to one reference.

    Each group's reference cells are its ``control`` cells (an obs query; all of the group's cells where it
    has none); a group's level is the mean over them of each crop's channel means. ``reference`` (C,): the
    level to bring each group to (default: the mean of the groups' levels, which a model records so that new
    stores are scaled to the level it was trained at). Reads every crop once.

    Returns ``scale`` float32 ``(N, C)`` (reference / the cell's group level; for `CellChunks`) and the
    reference as a list of C floats.
    """
    from ..get import control_mask
    from ..io.cells import obs_adata

    adata = obs_adata(path)
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in by if c not in adata.obs]
    if missing:
        raise ValueError(f"the cells store has no obs column(s) {missing} to normalize by; it has {list(adata.obs)}")
    data = CellChunks(path)
    means = np.concatenate([data[c][0].mean(dim=(2, 3)).numpy() for c in range(data.n_chunks)])
    group = adata.obs[by].astype(str).agg("@".join, axis=1).to_numpy()
    try:
        is_control = control_mask(adata, control, require=False)
    except ValueError as err:  # e.g. a store without a compound column
        logger.warning("group_scale: %s; each group's level comes from all its cells", err)
        is_control = np.zeros(adata.n_obs, dtype=bool)
    levels = {}
    for g in np.unique(group):
        in_group = group == g
        pick = in_group & is_control if (in_group & is_control).any() else in_group
        levels[g] = means[pick].mean(axis=0)
    ref = np.mean(list(levels.values()), axis=0) if reference is None else np.asarray(reference, np.float64)
    level = np.stack([levels[g] for g in group])
    scale = (ref / np.maximum(level, 1e-12)).astype(np.float32)
    return scale, [float(v) for v in ref]


def model_scale(path, config: dict) -> np.ndarray | None:
    """`group_scale` factors ``(N, C)`` of the store at ``path`` for a model's saved ``config`` (its ``norm_by``,
    ``norm_control`` and ``norm_reference``); None for a model trained without ``norm_by``."""
    if not config.get("norm_by"):
        return None
    return group_scale(path, config["norm_by"], control=config["norm_control"], reference=config["norm_reference"])[0]


def iter_batches(data: CellChunks, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                 num_workers: int = 0, buffer_cells: int = 1024, drop_last: bool = False) -> Iterator[tuple]:
    """Yield ``(crops, rows)`` batches: float32 ``(B, C, S, S)`` and int64 ``(B,)`` (``(crops, masks, rows)``
    when ``data.masks``).

    ``shuffle``: the order of the read units and the cells within a buffer of at least
    ``buffer_cells`` cells are permuted with ``generator`` (CPU); the result is the same for any ``num_workers``.
    Without shuffling, cells come in store order.
    """
    order = torch.randperm(len(data), generator=generator).tolist() if shuffle else list(range(len(data)))
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=order, num_workers=num_workers,
                                         persistent_workers=False, prefetch_factor=2 if num_workers else None)
    pending, n_pending = [], 0

    def flush(final: bool):
        nonlocal pending, n_pending
        parts = [torch.cat(p) for p in zip(*pending)]
        if shuffle:
            perm = torch.randperm(len(parts[0]), generator=generator)
            parts = [p[perm] for p in parts]
        n = len(parts[0])
        n_out = n if final else n - n % batch_size
        for start in range(0, n_out, batch_size):
            stop = min(start + batch_size, n_out)
            if stop - start == batch_size or not drop_last:
                yield tuple(p[start:stop] for p in parts)
        pending, n_pending = [tuple(p[n_out:] for p in parts)], n - n_out

    for item in loader:
        pending.append(tuple(item))
        n_pending += len(item[0])
        if n_pending >= max(buffer_cells, batch_size):
            yield from flush(final=False)
    if n_pending:
        yield from flush(final=True)


def cell_view_size(path, *, max_cells: int = 4096, center: str = "nucleus", quantile: float = 0.95,
                   multiple: int = 8) -> int:
    """Side (px) of a square centred on the nucleus (or the cell centroid) that holds the whole cell
    for ``quantile`` of up to ``max_cells`` cells (whole chunks spread evenly over the store), from
    the cell masks; rounded up to a multiple of ``multiple``, at most the stored crop size."""
    data = CellChunks(path, masks=True)
    n_take = max(1, min(data.n_chunks, -(-max_cells // data.chunk_size)))
    picks = np.unique(np.linspace(0, data.n_chunks - 1, n_take).round().astype(int))
    s = data.crop_size
    coords = np.arange(s) + 0.5
    extents = []
    for c in picks:
        cell = data[int(c)][1][:, 1].numpy()
        for m in cell:
            ys, xs = np.nonzero(m)
            if not len(ys):
                continue
            cy, cx = (ys.mean() + 0.5, xs.mean() + 0.5) if center == "cell" else (s / 2, s / 2)
            reach = max(np.abs(coords[ys] - cy).max(), np.abs(coords[xs] - cx).max()) + 0.5
            extents.append(2 * reach)
    if not extents:
        return s
    size = int(multiple * np.ceil(np.quantile(extents, quantile) / multiple))
    return int(min(max(size, multiple), s))
