"""``cellkit export``: a cells (or wells) AnnData as a flat table for pycytominer users."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail

FORMATS = ("parquet", "csv")


def export(
    source: Path = typer.Argument(..., help="AnnData to export: .h5ad file or .zarr AnnData folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Output table."),
    format: str = typer.Option("parquet", "--format", "-f", help=f"Table format: {', '.join(FORMATS)}."),
):
    """Write obs columns as ``Metadata_<column>`` and the features (X) as named columns."""
    if format not in FORMATS:
        fail(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if not source.exists():
        fail(f"{source} does not exist")
    from .._atomic import check_output

    check_output(out, "file")
    import anndata as ad

    from .._atomic import atomic_path
    from ..features import to_pycytominer

    try:
        adata = ad.read_zarr(source) if source.is_dir() else ad.read_h5ad(source)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad input here
        fail(f"cannot read {source} as AnnData: {err}")
    try:
        table = to_pycytominer(adata)
    except ValueError as err:
        fail(str(err))
    with atomic_path(out) as tmp:
        if format == "parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)
    n_meta = sum(c.startswith("Metadata_") for c in table.columns)
    console.print(f"{len(table)} rows, {n_meta} metadata and {table.shape[1] - n_meta} feature columns -> {out}")


def register(app: typer.Typer) -> None:
    app.command()(export)
