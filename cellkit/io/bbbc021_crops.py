"""Import the real BBBC021 single-cell crops (npz + index.csv) into a cells.zarr and an AnnData.

The source (see ``shared/data/real/bbbc021_singlecell_crops/README.md``) gives crops only: no
segmentation masks and no crop centroids. The store therefore holds all-True nucleus and cell
masks, and its attributes say so (``masks_available: False``); obs ``centroid_y/x`` are NaN.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .cells import obs_adata, write_cells

# Channel 0 is DNA (checked by eye); the source names the channels "dapi, tubulin and actin"
# without stating the order of channels 1 and 2. We keep that order and record the caveat.
BBBC021_CROP_CHANNELS = ["DNA", "Tubulin", "Actin"]
REQUIRED_COLUMNS = ["cell_idx", "plate", "well", "site", "compound", "concentration", "moa"]


def import_bbbc021_crops(npz: str | os.PathLike, index_csv: str | os.PathLike, out_zarr: str | os.PathLike,
                         out_h5ad: str | os.PathLike | None = None, *, channels=None, chunk_cells: int = 256,
                         overwrite: bool = False) -> Path:
    """Write the crops of ``npz`` (key ``crops``: (N, S, S, C) uint16) as a complete cells.zarr.

    obs (one row per crop, npz order): ``cell_id`` (``<plate>/<well>/<site>/<cell_idx>``), ``plate, well,
    site, batch`` (week prefix of the plate), ``compound, concentration, moa`` (as in the source: ``DMSO`` for controls),
    ``field_id, label, centroid_y, centroid_x, crop_index``. With ``out_h5ad``, also writes an AnnData
    of that obs (index cell_id, no variables) for `cellkit.models.embed`. Returns ``out_zarr``.
    """
    from .._atomic import atomic_path

    channels = list(channels or BBBC021_CROP_CHANNELS)
    with np.load(npz) as f:
        if "crops" not in f:
            raise KeyError(f"{npz} has no 'crops' array (keys: {list(f.keys())})")
        crops = f["crops"]
    if crops.ndim != 4 or crops.shape[1] != crops.shape[2] or crops.shape[3] != len(channels):
        raise ValueError(f"crops must be (N, S, S, {len(channels)}) channels-last; got {crops.shape}")
    if crops.dtype != np.uint16:
        raise TypeError(f"crops must be uint16, got {crops.dtype}")
    index = pd.read_csv(index_csv)
    missing = [c for c in REQUIRED_COLUMNS if c not in index]
    if missing:
        raise ValueError(f"{index_csv} lacks columns {missing}")
    if len(index) != len(crops):
        raise ValueError(f"{index_csv} has {len(index)} rows but {npz} has {len(crops)} crops")
    obs = crops_obs(index)
    if obs.cell_id.duplicated().any():
        raise ValueError(f"duplicate cells in {index_csv}: {obs.cell_id[obs.cell_id.duplicated()].tolist()[:3]}")
    images = np.ascontiguousarray(np.moveaxis(crops, -1, 1))
    masks = np.ones((len(crops), 2) + crops.shape[1:3], bool)
    attrs = {"source": str(Path(npz).resolve()), "masks_available": False,
             "masks_note": "the source gives no segmentation: masks are all True",
             "channel_order_note": "channel 0 is DNA; the order of channels 1 and 2 is not stated by the source"}
    out_zarr = Path(out_zarr)
    if out_zarr.exists() and not overwrite:
        raise FileExistsError(f"{out_zarr} exists; pass overwrite=True to replace it")
    with atomic_path(out_zarr) as tmp:
        write_cells(tmp, images, masks, obs, channels=channels, attrs=attrs, chunk_cells=chunk_cells)
    if out_h5ad is not None:
        adata = obs_adata(out_zarr)
        adata.uns["cellkit"] = {"source": attrs["source"], "channels": channels, "masks_available": False}
        with atomic_path(out_h5ad) as tmp:
            adata.write_h5ad(tmp)
    return out_zarr


def crops_obs(index: pd.DataFrame) -> pd.DataFrame:
    """The obs table of the crops from the source's index.csv rows."""
    plate = index["plate"].astype(str)
    well = index["well"].astype(str)
    site = index["site"].astype(int)
    label = index["cell_idx"].astype(int)
    field_id = plate + "/" + well + "/" + site.astype(str)
    return pd.DataFrame({
        "cell_id": field_id + "/" + label.astype(str), "plate": plate, "well": well, "site": site,
        "batch": plate.str.split("_").str[0], "compound": index["compound"].astype(str),
        "concentration": index["concentration"].astype(float), "moa": index["moa"].astype(object),
        "field_id": field_id, "label": label, "centroid_y": np.nan, "centroid_x": np.nan,
        "crop_index": np.arange(len(index)),
    })
