"""A PyTorch Dataset over a cells.zarr: random access to single cells, safe in DataLoader workers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .cells import open_cells, read_obs, read_rows


class CellDataset:
    """Random-access single cells of a complete cells.zarr, for `torch.utils.data.DataLoader`.

    The store is opened lazily in each process (the Dataset pickles as its path only), so it
    works with ``num_workers > 0``.

    Parameters
    ----------
    path
        A complete cells.zarr.
    indices
        Optional subset of store rows (e.g. a train split); default: every cell.
    target
        Optional obs column returned as ``"target"`` (categories coded as int64 in sorted order;
        ``target_names`` lists them).
    masks
        Also return the (2, S, S) bool masks.
    transform
        Optional callable applied to the image tensor.

    Items are dicts: ``"image"`` float32 tensor (C, S, S) scaled to [0, 1] (uint16 / 65535),
    ``"index"`` the store row, and ``"mask"`` / ``"target"`` when asked. ``__getitems__`` reads
    a whole DataLoader batch with one read per touched chunk (`read_rows`), concurrently.
    """

    def __init__(self, path: str | os.PathLike, *, indices=None, target: str | None = None, masks: bool = False,
                 transform=None):
        self.path = Path(path)
        root = open_cells(self.path)  # refuses an incomplete store now, not in a worker
        n = int(root["images"].shape[0])
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexError(f"indices out of range for a store of {n} cells")
        self.masks, self.transform = masks, transform
        self.targets, self.target_names = None, None
        if target is not None:
            values = read_obs(root)[target].astype(str)
            self.target_names = sorted(values.unique())
            self.targets = values.map({name: k for k, name in enumerate(self.target_names)}).to_numpy(np.int64)
        self._root = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_root"] = None  # each worker opens its own handle
        return state

    def _arrays(self):
        if self._root is None:
            self._root = open_cells(self.path)
        return self._root

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, items: list[int]) -> list[dict]:
        """Several items with one read per array (used by DataLoader for a whole batch)."""
        import torch

        rows = self.indices[np.asarray(items, dtype=np.int64)]
        root = self._arrays()
        images = read_rows(root["images"], rows)
        masks = read_rows(root["masks"], rows) if self.masks else None
        batch = []
        for k, row in enumerate(rows):
            image = torch.from_numpy(images[k].astype(np.float32) / 65535.0)
            item = {"image": self.transform(image) if self.transform is not None else image, "index": int(row)}
            if masks is not None:
                item["mask"] = torch.from_numpy(masks[k])
            if self.targets is not None:
                item["target"] = int(self.targets[row])
            batch.append(item)
        return batch
