"""Row-block access to an AnnData in memory, a backed ``.h5ad`` or an AnnData ``.zarr`` store (out of core)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np


def open_rows(data):
    """(X-like sliceable, obs DataFrame, var_names, obsm getter, closer) for AnnData or a path."""
    if isinstance(data, ad.AnnData):
        return data, data.obs, data.var_names, (lambda key: data.obsm[key]), (lambda: None)
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"no AnnData at {path}")
    from .provenance import check_upstream, read_cellkit_uns

    check_upstream(read_cellkit_uns(path), path)
    if path.suffix == ".h5ad":
        try:
            backed = ad.read_h5ad(path, backed="r")
        except (OSError, KeyError, ValueError) as err:
            from ..errors import UnreadableFileError, reason

            raise UnreadableFileError(f"{path} is not a readable .h5ad file ({reason(err)})",
                                      "it may be truncated or damaged: write it again with the command that "
                                      "made it") from None
        return backed, backed.obs, backed.var_names, (lambda key: backed.obsm[key]), backed.file.close
    import zarr
    from anndata.io import read_elem

    group = zarr.open_group(str(path), mode="r")
    obs = read_elem(group["obs"])
    var = read_elem(group["var"])

    class _Zarr:  # only what aggregate needs: .X sliced by rows
        X = group["X"]
        n_obs = len(obs)

    def obsm(key):
        if key not in group["obsm"]:
            raise KeyError(f"obsm has no {key!r}; obsm keys: {list(group['obsm'].array_keys())}")
        return group["obsm"][key]

    return _Zarr(), obs, var.index, obsm, (lambda: None)


def dense_rows(matrix, start: int, stop: int, dtype=np.float64) -> np.ndarray:
    block = matrix[start:stop]
    if hasattr(block, "toarray"):
        block = block.toarray()
    return np.asarray(block, dtype=dtype)

