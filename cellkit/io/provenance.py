"""Upstream fingerprints: a derived file is refused once what it was made from has changed.

A cellkit AnnData records in ``uns["cellkit"]``:

- ``fingerprint``: its own identity (cells.h5ad: the fingerprint of the cells.zarr extraction it
  was written from; well profiles: a hash of their upstream's fingerprint and their parameters);
- ``upstream``: ``{"path", "kind", "fingerprint"}`` of what it was made from (``kind``
  ``"cells_store"`` for a cells.zarr, ``"anndata"`` for an .h5ad / AnnData .zarr), or a dict of
  them by step: the whole lineage (wells record their cells.h5ad and the cells.zarr behind it).

`check_upstream` (called by the readers: `cellkit.io.lazy_anndata.open_rows`, `read_profiles`)
raises `StaleOutputError` when the upstream still exists but its fingerprint differs (it was
replaced) or, for a cells store, it is not complete (being rewritten). An upstream that no longer
exists cannot be checked and is accepted (the file is self-contained).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import StaleOutputError


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def store_fingerprint(path: str | os.PathLike) -> tuple[str | None, bool]:
    """``(fingerprint, complete)`` of a cells.zarr from its root attributes (None when unreadable)."""
    meta = Path(path) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None, False
    return attrs.get("extract", {}).get("fingerprint"), attrs.get("complete") is True


def anndata_fingerprint(path: str | os.PathLike) -> str | None:
    """``uns["cellkit"]["fingerprint"]`` of an .h5ad or AnnData .zarr, read without its matrices."""
    info = read_cellkit_uns(path)
    return info.get("fingerprint") if info else None


def read_cellkit_uns(path: str | os.PathLike) -> dict | None:
    """``uns["cellkit"]`` of an .h5ad / AnnData .zarr (plain dict), None when absent or unreadable."""
    from anndata.io import read_elem

    path = Path(path)
    try:
        if path.suffix == ".h5ad":
            import h5py

            with h5py.File(path, "r") as f:
                return read_elem(f["uns/cellkit"]) if "uns/cellkit" in f else None
        import zarr

        group = zarr.open_group(str(path), mode="r")
        return read_elem(group["uns/cellkit"]) if "uns" in group and "cellkit" in group["uns"] else None
    except (OSError, KeyError, ValueError):
        return None


def derive_fingerprint(upstream: str | None, parameters: dict) -> str:
    """Fingerprint of an output made from ``upstream`` (a fingerprint or None) with ``parameters``."""
    digest = hashlib.sha256(json.dumps({"upstream": upstream, "parameters": parameters}, sort_keys=True,
                                       default=str).encode())
    return digest.hexdigest()


def lineage(info: dict | None) -> list[dict]:
    """The upstream entries recorded in a ``uns["cellkit"]`` dict (a dict or a list of them)."""
    upstream = (info or {}).get("upstream")
    if not isinstance(upstream, dict):
        return []
    if "path" in upstream:
        return [upstream]
    return [u for _, u in sorted(upstream.items()) if isinstance(u, dict) and "path" in u]


def check_upstream(info: dict | None, path: str | os.PathLike) -> None:
    """Refuse ``path`` (whose ``uns["cellkit"]`` is ``info``) when a recorded upstream changed."""
    for upstream in lineage(info):
        _check_one(upstream, path)


def _check_one(upstream: dict, path) -> None:
    source, kind, recorded = Path(str(upstream.get("path", ""))), upstream.get("kind"), upstream.get("fingerprint")
    if not recorded or not str(source) or not source.exists():
        return
    if kind == "cells_store":
        current, complete = store_fingerprint(source)
        if current == recorded and not complete:
            raise StaleOutputError(f"{path} was made from {source}, which is being rewritten (incomplete)",
                                   "let the extraction finish (rerun the same cellkit extract), then read it")
    else:
        current = anndata_fingerprint(source)
    if current != recorded:
        raise StaleOutputError(f"{path} was made from an earlier {source}, which has since been replaced",
                               f"rerun the command that writes {path} from the new {source.name}")
