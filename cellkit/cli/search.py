"""``cellkit index-embeddings`` and ``cellkit search``: FAISS similarity search over an h5ad's cells or wells
(`cellkit.workflows.search`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail

LEVEL_HELP = "cell: one vector per row of the h5ad; well: well means (by plate, well) of the representation."


def index_embeddings(
    h5ad: Path = typer.Argument(..., help="AnnData (cells.h5ad) holding the embeddings."),
    use_rep: str = typer.Option("X", "--use-rep", help="X or an obsm key (e.g. X_simclr)."),
    kind: str = typer.Option("exact", help="exact (flat), ivf or hnsw (approximate)."),
    level: str = typer.Option("cell", help=LEVEL_HELP),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build even when a matching saved index exists."),
):
    """Build a cosine-similarity index and save it beside the h5ad (<name>.<level>.<rep>.<kind>.faiss)."""
    from ..workflows.search import index_h5ad

    try:
        indexed = index_h5ad(h5ad, use_rep=use_rep, kind=kind, level=level, rebuild=rebuild)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    params = indexed.index.params
    console.print(f"{'built' if indexed.built else 'up to date'}: {indexed.path} ({params['n']} vectors of "
                  f"dimension {params['dim']}, {kind})")


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
    from ..io.images import ImageReadError
    from ..models import IncompleteModelError
    from ..workflows.search import search_h5ad

    if bool(query) == bool(crop):
        fail("give either query ids or --crop files")
    if crop and use_rep == "X":
        fail("--crop needs --use-rep naming an embedding (e.g. X_simclr): X holds measured features, "
             "which no model computes from a crop")
    try:
        table, indexed = search_h5ad(h5ad, list(query or []), crops=crop, model=model, use_rep=use_rep, kind=kind,
                                     level=level, k=k, rebuild=rebuild)
    except (KeyError, ValueError, FileNotFoundError, ImageReadError, IncompleteModelError, ImportError) as err:
        fail(str(err).strip("'\""))
    if out:
        table.to_csv(out, index=False)
    shown = [c for c in ("query", "rank", "neighbor", "similarity", "compound", "concentration", "moa", "plate", "well")
             if c in table]
    console.print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    console.print(f"index {indexed.path} ({'built now' if indexed.built else 'reused'})"
                  + (f"; table written to {out}" if out else ""))


def register(app: typer.Typer) -> None:
    app.command("index-embeddings")(index_embeddings)
    app.command()(search)
