"""Similarity search over an h5ad's cells or wells, by id or by new crops: the workflow behind
``cellkit index-embeddings`` and ``cellkit search``, callable from notebooks.

`index_h5ad`: the saved FAISS index of an h5ad's cells or well means (built once, beside the h5ad).
`search_h5ad`: nearest neighbours of cell ids, wells (``PLATE/WELL``) or new crop files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from ..tl._search import SimilarityIndex, _rep_name, build_index

LEVELS = ("cell", "well")
NO_MODEL_FOR_X = ("new crops need use_rep naming an embedding (e.g. X_simclr): X holds measured features, "
                  "which no model computes from a crop")


@dataclass
class IndexedRows:
    """What `index_h5ad` opened and built.

    cells : the h5ad read in memory. rows : the indexed AnnData (``cells``, or their well means
    with the representation in ``X``). use_rep : the key of ``rows`` that was indexed.
    index : the `cellkit.tl.SimilarityIndex`. path : where it is saved. built : False when reused.
    """

    cells: ad.AnnData
    rows: ad.AnnData
    use_rep: str
    index: object
    path: Path
    built: bool


def index_path(h5ad: str | os.PathLike, *, use_rep: str | None = None, kind: str = "exact",
               level: str = "cell") -> Path:
    """Where the index of an h5ad is kept: beside it, ``<name>.<level>.<use_rep>.<kind>.faiss`` (+ ``.json``)."""
    h5ad = Path(h5ad)
    return h5ad.with_name(f"{h5ad.stem}.{level}.{_rep_name(use_rep)}.{kind}.faiss")


def load_or_build_index(adata, path: str | os.PathLike, *, use_rep: str | None = None, kind: str = "exact",
                        rebuild: bool = False, **options) -> tuple[SimilarityIndex, bool]:
    """The saved index at ``path`` when it is complete and was built from the same rows (ids),
    representation and kind; otherwise build it over ``adata`` and save it there.

    Returns ``(index, built)``.
    """
    path, use_rep = Path(path), _rep_name(use_rep)
    if not rebuild and path.exists() and Path(str(path) + ".json").exists():
        index = SimilarityIndex.load(path)
        same = (index.params.get("use_rep") == use_rep and index.params.get("kind") == kind
                and len(index.ids) == adata.n_obs and (index.ids == adata.obs_names.to_numpy(dtype=object)).all())
        if same:
            return index, False
    index = build_index(adata, use_rep=use_rep, kind=kind, **options)
    index.params["use_rep"] = use_rep
    Path(str(path) + ".json").unlink(missing_ok=True)  # the old JSON must not vouch for a half-replaced index
    index.save(path)
    return index, True



def _rows(cells: ad.AnnData, h5ad: Path, use_rep: str, level: str) -> tuple[ad.AnnData, str]:
    from ..tl import aggregate

    if use_rep != "X" and use_rep not in cells.obsm:
        raise ValueError(f"{h5ad} has no obsm[{use_rep!r}]; obsm keys: {list(cells.obsm.keys())}")
    if level == "cell":
        return cells, use_rep
    missing = [c for c in ("plate", "well") if c not in cells.obs]
    if missing:
        raise ValueError(f"level 'well' needs obs columns plate and well; {h5ad} lacks {missing}")
    return aggregate(cells, by=("plate", "well"), use_rep=None if use_rep == "X" else use_rep), "X"


def index_h5ad(h5ad: str | os.PathLike, *, use_rep: str = "X", kind: str = "exact", level: str = "cell",
               rebuild: bool = False) -> IndexedRows:
    """Read ``h5ad`` and load (or build and save) the cosine index of its cells (``level="cell"``: one
    vector per row, ``X`` or ``obsm[use_rep]``) or well means (``level="well"``, by plate and well).

    The index lives beside the h5ad (`index_path`) and is reused while it was built
    from the same rows, representation and kind. Raises ValueError for a bad level, kind or key and
    FileNotFoundError for a missing h5ad.
    """
    from ..tl._search import KINDS

    h5ad = Path(h5ad)
    if level not in LEVELS:
        raise ValueError(f"level must be 'cell' or 'well', got {level!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not h5ad.exists():
        raise FileNotFoundError(f"{h5ad} does not exist")
    cells = ad.read_h5ad(h5ad)
    rows, rep = _rows(cells, h5ad, use_rep, level)
    path = index_path(h5ad, use_rep=use_rep, kind=kind, level=level)
    index, built = load_or_build_index(rows, path, use_rep=rep, kind=kind, rebuild=rebuild)
    return IndexedRows(cells, rows, rep, index, path, built)


def embed_crop_files(cells: ad.AnnData, crops: Sequence[str | os.PathLike], use_rep: str,
                     model: str | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Embed crop files (.npy or TIFF, (C, S, S) or (N, C, S, S), channels in the store's order) with the
    model recorded for ``cells.obsm[use_rep]`` (or ``model``, which must be that model).

    Returns ``(vectors (n, D) float32, names, channels)``; names are file stems (``stem[i]`` for stacks).
    """
    import torch

    from ..io.images import read_crops
    from ..models.embed import recorded_embedder

    if use_rep == "X":
        raise ValueError(NO_MODEL_FOR_X)
    embedder, channels = recorded_embedder(cells, use_rep, model=model)
    expected = (cells.uns.get("cellkit") or {}).get("crop_size")
    vectors, names = [], []
    for path in map(Path, crops):
        x = read_crops(str(path), len(channels))
        if expected is not None and x.shape[-1] != int(expected):
            from ..errors import CellkitError

            raise CellkitError(f"crops {path} are {x.shape[-1]} x {x.shape[-1]} px, but the cells searched were "
                               f"embedded from {int(expected)} x {int(expected)} px crops; neighbours would mean "
                               "nothing", f"cut the query crops like the store's ({int(expected)} px, centred on "
                               "the nucleus, channels in the store's order)")
        vectors.append(np.asarray(embedder(torch.from_numpy(x)), np.float32))
        names += [path.stem] if len(x) == 1 else [f"{path.stem}[{i}]" for i in range(len(x))]
    return np.concatenate(vectors), names, list(channels)


def search_h5ad(h5ad: str | os.PathLike, query: Sequence[str] | None = None, *,
                crops: Sequence[str | os.PathLike] | None = None, model: str | None = None, use_rep: str = "X",
                kind: str = "exact", level: str = "cell", k: int = 10,
                rebuild: bool = False) -> tuple[pd.DataFrame, IndexedRows]:
    """Nearest neighbours (cosine) of ``query`` ids (cell ids, or ``PLATE/WELL`` with ``level="well"``) or
    of new ``crops`` (see `embed_crop_files`), with the neighbours' metadata.

    Returns ``(table, indexed)``: the `cellkit.tl.search` table (query, rank, neighbor, similarity, obs
    columns) and the `IndexedRows` searched. Raises ValueError when both or neither of ``query`` and
    ``crops`` are given, KeyError naming unknown ids (with examples of the row names).
    """
    from ..tl import search

    if bool(query) == bool(crops):
        raise ValueError("give either query ids or crop files")
    if crops and use_rep == "X":
        raise ValueError(NO_MODEL_FOR_X)
    indexed = index_h5ad(h5ad, use_rep=use_rep, kind=kind, level=level, rebuild=rebuild)
    rows = indexed.rows
    if crops:
        vectors, names, _ = embed_crop_files(indexed.cells, crops, use_rep, model)
        table = search(rows, vectors, index=indexed.index, use_rep=indexed.use_rep, k=k, query_names=names)
    else:
        try:
            table = search(rows, list(query), index=indexed.index, use_rep=indexed.use_rep, k=k)
        except KeyError as err:
            raise KeyError(f"{str(err).strip(chr(34) + chr(39))} (the {level}s are named like "
                           f"{list(rows.obs_names[:3])})") from None
    return table, indexed
