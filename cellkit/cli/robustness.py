"""``cellkit robustness``: embedding drift of trained models under imaging perturbations."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail, progress_bar


def robustness(
    cells: Path = typer.Argument(..., help="cells.zarr whose crops are perturbed."),
    model: list[str] = typer.Option(..., "--model", "-m", help="Model folder, hf:NAME_OR_PATH for a ViT-MAE, or "
                                    "handcrafted (CellProfiler-style features of each crop's cell); repeat for several."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for robustness.csv/.json and figures."),
    perturbation: list[str] = typer.Option(None, "--perturbation", "-p",
                                           help="noise, blur, brightness, contrast, shift (repeat; default all)."),
    max_cells: int = typer.Option(1000, help="Cells evaluated (seeded random sample); groups with --groupby."),
    groupby: str = typer.Option(None, help="obs column whose rows are averaged before measuring (field_id of a "
                                "store written by cellkit tiles: image-level drift)."),
    k: int = typer.Option(10, help="Neighbours for the kNN overlap."),
    seed: int = typer.Option(0, help="Random seed (cell sample, noise, shift directions)."),
    batch_size: int = typer.Option(128, help="Crops per batch."),
    control: str = typer.Option("compound == 'DMSO'", help="obs query of control cells (well-level NSC)."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Write the curves and similarity plots."),
    umap: bool = typer.Option(True, "--umap/--no-umap", help="Also a UMAP of clean vs perturbed embeddings per model."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
):
    """Perturb crops (noise, blur, brightness, contrast, shift) and measure each model's embedding drift."""
    from .. import models as _models
    from ..io.cells import IncompleteStoreError
    from ..tl import robustness as run, robustness_summary as summary_table
    from ..workflows.robustness import write_report

    try:
        with progress_bar("robustness") as update:
            result = run(cells, [str(m) for m in model], perturbations=perturbation or None, max_cells=max_cells,
                         groupby=groupby, k=k, seed=seed, batch_size=batch_size, control=control, device=device, progress=update)
        write_report(result, out, figures=figures, umap=umap)
    except (FileNotFoundError, IncompleteStoreError, _models.IncompleteModelError, KeyError, ValueError,
            ImportError) as err:
        fail(str(err).strip("'\""))
    console.print(summary_table(result, metric="knn_overlap").round(3).to_string())
    console.print(f"robustness table and figures written to {out}")


def register(app: typer.Typer) -> None:
    app.command()(robustness)
