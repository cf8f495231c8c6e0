"""``cellkit index-embeddings`` and ``cellkit search``: FAISS similarity search over an h5ad's cells or wells."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail

LEVEL_HELP = "cell: one vector per row of the h5ad; well: well means (by plate, well) of the representation."


def _vectors(h5ad: Path, use_rep: str, level: str):
    """The cells read from ``h5ad``, the AnnData whose rows are indexed (the cells, or their well
    means: X = mean of ``use_rep``) and the representation indexed."""
    import anndata as ad

    from .. import tl

    if level not in ("cell", "well"):
        fail(f"--level must be 'cell' or 'well', got {level!r}")
    if not h5ad.exists():
        fail(f"{h5ad} does not exist")
    adata = ad.read_h5ad(h5ad)
    if use_rep != "X" and use_rep not in adata.obsm:
        fail(f"{h5ad} has no obsm[{use_rep!r}]; obsm keys: {list(adata.obsm.keys())}")
    if level == "well":
        missing = [c for c in ("plate", "well") if c not in adata.obs]
        if missing:
            fail(f"--level well needs obs columns plate and well; {h5ad} lacks {missing}")
        wells = tl.aggregate(adata, by=("plate", "well"), use_rep=None if use_rep == "X" else use_rep)
        return adata, wells, "X"
    return adata, adata, use_rep


def _index(h5ad, use_rep, kind, level, rebuild):
    from ..tl._search import KINDS, index_path, load_or_build_index

    if kind not in KINDS:
        fail(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    cells, adata, rep = _vectors(h5ad, use_rep, level)
    path = index_path(h5ad, use_rep=use_rep, kind=kind, level=level)
    try:
        index, built = load_or_build_index(adata, path, use_rep=rep, kind=kind, rebuild=rebuild)
    except ValueError as err:
        fail(str(err))
    return cells, adata, rep, index, path, built


def index_embeddings(
    h5ad: Path = typer.Argument(..., help="AnnData (cells.h5ad) holding the embeddings."),
    use_rep: str = typer.Option("X", "--use-rep", help="X or an obsm key (e.g. X_simclr)."),
    kind: str = typer.Option("exact", help="exact (flat), ivf or hnsw (approximate)."),
    level: str = typer.Option("cell", help=LEVEL_HELP),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build even when a matching saved index exists."),
):
    """Build a cosine-similarity index and save it beside the h5ad (<name>.<level>.<rep>.<kind>.faiss)."""
    _, _, _, index, path, built = _index(h5ad, use_rep, kind, level, rebuild)
    console.print(f"{'built' if built else 'up to date'}: {path} ({index.params['n']} vectors of dimension "
                  f"{index.params['dim']}, {kind})")


def _crop_queries(cells, crops: list[Path], use_rep: str, model: str | None):
    """Embed the crop files with the model that made ``cells.obsm[use_rep]``; returns (vectors (n, D), names)."""
    import numpy as np
    import torch

    from ..io.images import ImageReadError, read_crops
    from ..models import IncompleteModelError
    from ..models.embed import recorded_embedder

    try:
        embedder, channels = recorded_embedder(cells, use_rep, model=model)
        vectors, names = [], []
        for path in crops:
            x = read_crops(str(path), len(channels))
            vectors.append(np.asarray(embedder(torch.from_numpy(x)), np.float32))
            names += [path.stem] if len(x) == 1 else [f"{path.stem}[{i}]" for i in range(len(x))]
    except (KeyError, ValueError, FileNotFoundError, ImageReadError, IncompleteModelError, ImportError) as err:
        fail(str(err).strip("'\""))
    console.print(f"embedded {len(names)} crop(s) ({', '.join(channels)}) for {use_rep}")
    return np.concatenate(vectors), names


def search(
    h5ad: Path = typer.Argument(..., help="AnnData (cells.h5ad) holding the embeddings."),
    query: list[str] = typer.Argument(None, help="Cell ids (obs names) or, with --level well, wells as PLATE/WELL."),
    crop: list[Path] = typer.Option(None, "--crop", help="A new crop as .npy or TIFF, (C, S, S) or (N, C, S, S), "
                                    "channels in the store's order; embedded with the model recorded for "
                                    "--use-rep (repeat for several files)."),
    model: str = typer.Option(None, "--model", help="With --crop: the model folder (or hf:NAME_OR_PATH) to use "
                              "instead of the recorded one (it must be the same model)."),
    use_rep: str = typer.Option("X", "--use-rep", help="X or an obsm key (e.g. X_simclr)."),
    kind: str = typer.Option("exact", help="exact (flat), ivf or hnsw (approximate)."),
    level: str = typer.Option("cell", help=LEVEL_HELP),
    k: int = typer.Option(10, "--k", "-k", help="Neighbours per query."),
    out: Path = typer.Option(None, "--out", "-o", help="Also write the neighbours as CSV."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the saved index."),
):
    """Nearest neighbours (cosine) of cells, wells or new crops, with their metadata; the index is built once
    and reused."""
    from ..tl import search as run

    if bool(query) == bool(crop):
        fail("give either query ids or --crop files")
    if crop and use_rep == "X":
        fail("--crop needs --use-rep naming an embedding (e.g. X_simclr): X holds measured features, "
             "which no model computes from a crop")
    cells, adata, rep, index, path, built = _index(h5ad, use_rep, kind, level, rebuild)
    try:
        if crop:
            vectors, names = _crop_queries(cells, crop, use_rep, model)
            table = run(adata, vectors, index=index, use_rep=rep, k=k, query_names=names)
        else:
            table = run(adata, list(query), index=index, use_rep=rep, k=k)
    except KeyError as err:
        examples = list(adata.obs_names[:3])
        fail(f"{str(err).strip(chr(34) + chr(39))} (the {level}s are named like {examples})")
    except ValueError as err:
        fail(str(err))
    if out:
        table.to_csv(out, index=False)
    shown = [c for c in ("query", "rank", "neighbor", "similarity", "compound", "concentration", "moa", "plate", "well")
             if c in table]
    console.print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    console.print(f"index {path} ({'built now' if built else 'reused'})" + (f"; table written to {out}" if out else ""))


def register(app: typer.Typer) -> None:
    app.command("index-embeddings")(index_embeddings)
    app.command()(search)
