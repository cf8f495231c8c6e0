"""AnnData slot access and provenance shared by `cellkit.pp` and `cellkit.tl` (scanpy's ``sc.get``).

- `get_rep`: ``X`` or ``obsm[use_rep]`` as a dense array. One convention everywhere: ``use_rep=None``
  or ``"X"`` means ``X``, any other string an ``obsm`` key (`rep_key`).
- `control_mask` / `ControlError`: control rows from an obs query or a mask.
- ``_record``: parameters into ``uns["cellkit"][<function>]``; ``_set_rep``, ``_groups``, ``_column``.
"""

from __future__ import annotations

from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from . import __version__


class ControlError(ValueError):
    """Control rows are missing where a function needs them."""


# --------------------------------------------------------------------------- helpers

def rep_key(use_rep: str | None) -> str | None:
    """``None`` for ``X`` (given as None or ``"X"``), else the obsm key."""
    return None if use_rep in (None, "X") else use_rep


def get_rep(adata: ad.AnnData, use_rep: str | None) -> np.ndarray:
    """The matrix of ``adata.X`` (``use_rep`` None or ``"X"``) or ``adata.obsm[use_rep]`` as a dense array."""
    use_rep = rep_key(use_rep)
    if use_rep is None:
        X = adata.X
    else:
        if use_rep not in adata.obsm:
            raise KeyError(f"obsm has no {use_rep!r}; obsm keys: {list(adata.obsm.keys())}")
        X = adata.obsm[use_rep]
    if X is None:
        raise ValueError("adata.X is empty")
    if hasattr(X, "toarray"):
        X = X.toarray()
    return np.asarray(X)


def _set_rep(adata: ad.AnnData, use_rep: str | None, key_added: str | None, X: np.ndarray) -> None:
    key = rep_key(key_added or use_rep)
    if key is None:
        adata.X = X
    else:
        adata.obsm[key] = X


def _record(adata: ad.AnnData, name: str, params: dict) -> None:
    adata.uns.setdefault("cellkit", {})
    adata.uns["cellkit"][name] = {"cellkit_version": __version__,
                                  **{k: _plain(v) for k, v in params.items()}}


def _plain(value):
    """Parameters as values h5ad can store."""
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, (np.ndarray, pd.Series)):
        return "<array>"
    return value


def control_mask(adata: ad.AnnData, control: str | Sequence[bool] | np.ndarray | None, *,
                 require: bool = True) -> np.ndarray:
    """Boolean mask (n_obs,) of control rows from an obs query (``"compound == 'DMSO'"``) or a mask.

    The one place a control query is evaluated. ``control=None`` selects nothing. A query that
    cannot be evaluated raises ValueError naming the obs columns; with ``require`` (functions that
    need controls) a mask selecting nothing raises `ControlError`.
    """
    if control is None:
        if require:
            raise ControlError("a control (obs query or mask) is required")
        return np.zeros(adata.n_obs, dtype=bool)
    if isinstance(control, str):
        try:
            mask = adata.obs.eval(control)
        except Exception as err:  # pandas raises many types for a bad query
            raise ValueError(f"cannot evaluate control query {control!r} on obs "
                             f"(columns: {list(adata.obs.columns)}): {err}") from err
        mask = np.asarray(mask, dtype=bool)
    else:
        mask = np.asarray(control, dtype=bool)
    if mask.shape != (adata.n_obs,):
        raise ValueError(f"control mask has shape {mask.shape}, expected ({adata.n_obs},)")
    if require and not mask.any():
        raise ControlError(f"no row matches the control {control!r}")
    return mask


def _groups(adata: ad.AnnData, by: str | None) -> list[tuple[str, np.ndarray]]:
    if by is None:
        return [("all", np.arange(adata.n_obs))]
    if by not in adata.obs:
        raise KeyError(f"obs has no {by!r} column; obs columns: {list(adata.obs.columns)}")
    codes, names = pd.factorize(adata.obs[by].astype(str), sort=True)
    return [(name, np.flatnonzero(codes == k)) for k, name in enumerate(names)]


def _column(adata: ad.AnnData, name: str, what: str) -> pd.Series:
    if name not in adata.obs:
        raise KeyError(f"{what} column {name!r} is not in obs; obs columns: {list(adata.obs.columns)}")
    return adata.obs[name]

