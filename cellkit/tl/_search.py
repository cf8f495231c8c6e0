"""Similarity search over cell or well embeddings with FAISS (cosine similarity).

Vectors are L2-normalised so that inner product = cosine similarity. Index kinds:
``exact`` (IndexFlatIP), ``ivf`` (IndexIVFFlat, ``nlist`` lists, ``nprobe`` searched) and
``hnsw`` (IndexHNSWFlat, ``m`` links per node, ``ef_search``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..get import get_rep, rep_key

KINDS = ("exact", "ivf", "hnsw")


def _faiss():
    import faiss

    return faiss


def _normalise(vectors) -> np.ndarray:
    vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, d), got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or inf; drop or impute those rows first")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


@dataclass
class SimilarityIndex:
    """A FAISS index plus the ids (obs names) of its rows and how it was built."""

    index: object
    ids: np.ndarray
    params: dict

    def search(self, queries, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Search ``queries`` (n, d). Returns cosine similarities (n, k) and row numbers (n, k), best first."""
        k = min(int(k), len(self.ids))
        queries = _normalise(queries)
        if queries.shape[1] != self.params["dim"]:
            raise ValueError(f"queries have dimension {queries.shape[1]}, the index {self.params['dim']}")
        sims, rows = self.index.search(queries, k)
        return sims, rows

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>`` (FAISS index) and ``<path>.json`` (ids, parameters), each atomically;
        the JSON is written last, so an index file without its JSON is an unfinished save."""
        from .._atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            _faiss().write_index(self.index, str(tmp))
        with atomic_path(Path(str(path) + ".json")) as tmp:
            tmp.write_text(json.dumps({"ids": self.ids.tolist(), "params": self.params}))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SimilarityIndex":
        meta = json.loads(Path(str(path) + ".json").read_text())
        index = _faiss().read_index(str(path))
        if "ef_search" in meta["params"]:
            index.hnsw.efSearch = meta["params"]["ef_search"]
        if "nprobe" in meta["params"]:
            index.nprobe = meta["params"]["nprobe"]
        return cls(index, np.asarray(meta["ids"], dtype=object), meta["params"])


def build_similarity_index(vectors, ids=None, *, kind: str = "exact", nlist: int | None = None, nprobe: int = 16,
                           m: int = 32, ef_search: int = 64, seed: int = 0) -> SimilarityIndex:
    """Build a cosine-similarity index over ``vectors`` (n, d) float32; ``ids`` name the rows."""
    faiss = _faiss()
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    x = _normalise(vectors)
    n, d = x.shape
    ids = np.arange(n).astype(str).astype(object) if ids is None else np.asarray(ids, dtype=object)
    params = {"kind": kind, "n": n, "dim": d, "metric": "cosine"}
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = int(nlist or max(1, min(4 * int(np.sqrt(n)), n // 39)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(x)
        index.nprobe = min(nprobe, nlist)
        params.update(nlist=nlist, nprobe=index.nprobe, seed=seed)
    else:
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
        params.update(m=m, ef_search=ef_search)
    index.add(x)
    return SimilarityIndex(index, ids, params)


def _rep_name(use_rep: str | None) -> str:
    return rep_key(use_rep) or "X"


def build_index(adata, *, use_rep: str | None = None, kind: str = "exact", key_added: str | None = None,
                path: str | os.PathLike | None = None, **options) -> SimilarityIndex:
    """Build a similarity index over ``adata.X`` (``use_rep`` None or ``"X"``) or ``adata.obsm[use_rep]``.

    Writes ``adata.uns[key_added or f"index_{use_rep}"]`` (parameters, and the saved path when
    ``path`` is given). Returns the `SimilarityIndex`.
    """
    use_rep = _rep_name(use_rep)
    index = build_similarity_index(get_rep(adata, use_rep), adata.obs_names.to_numpy(), kind=kind, **options)
    record = {**index.params, "use_rep": use_rep}
    if path is not None:
        record["path"] = str(index.save(path))
    adata.uns[key_added or f"index_{use_rep}"] = record
    return index


def search(adata, query, *, index: SimilarityIndex | None = None, use_rep: str | None = None, k: int = 10,
           exclude_self: bool = True, query_names=None) -> pd.DataFrame:
    """Nearest neighbours of ``query`` with their metadata.

    ``query``: an obs name (cell id or well), a list of obs names, or vectors (n, d) (for example the
    embedding of a new crop, `cellkit.models.embed.recorded_embedder`), named by ``query_names``
    (default ``query_0 ...``). Reads ``X`` / ``obsm[use_rep]`` and ``obs`` (and writes what `build_index`
    writes when no ``index`` is given). Returns a DataFrame with ``query, rank, neighbor, similarity`` and the
    neighbours' obs columns.
    """
    if index is None:
        index = build_index(adata, use_rep=use_rep)
    if isinstance(query, str) or (isinstance(query, (list, tuple)) and query and isinstance(query[0], str)):
        names = [query] if isinstance(query, str) else list(query)
        missing = [q for q in names if q not in adata.obs_names]
        if missing:
            raise KeyError(f"not in adata.obs_names: {missing[:5]}")
        vectors = get_rep(adata, use_rep)[adata.obs_names.get_indexer(names)]
    else:
        vectors = np.atleast_2d(np.asarray(query, dtype=np.float32))
        names = list(query_names) if query_names is not None else [f"query_{i}" for i in range(len(vectors))]
        if len(names) != len(vectors):
            raise ValueError(f"{len(names)} query names for {len(vectors)} vectors")
        exclude_self = False
    sims, rows = index.search(vectors, k + int(exclude_self))
    records = []
    for q, name in enumerate(names):
        rank = 0
        for sim, row in zip(sims[q], rows[q]):
            if row < 0 or (exclude_self and index.ids[row] == name) or rank == k:
                continue
            rank += 1
            records.append({"query": name, "rank": rank, "neighbor": index.ids[row], "similarity": float(sim)})
    table = pd.DataFrame(records, columns=["query", "rank", "neighbor", "similarity"])
    meta = adata.obs.reindex(table["neighbor"].to_numpy()).reset_index(drop=True)
    return pd.concat([table, meta.drop(columns=[c for c in meta.columns if c in table.columns])], axis=1)


def recall_at_k(approximate: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k found in its approximate top-k; (n, k) row numbers each."""
    hits = [len(set(a) & set(e)) / len(e) for a, e in zip(approximate, exact)]
    return float(np.mean(hits))
