"""``cellkit export``: a cells (or wells) AnnData as a flat table for pycytominer / copairs users,
or a run's images and segmentation as OME-Zarr HCS plates for napari and other NGFF tools."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail, progress_bar

FORMATS = ("parquet", "csv", "ome-zarr")


def export(
    source: Path = typer.Argument(..., help="parquet/csv: AnnData (.h5ad or .zarr AnnData folder). ome-zarr: "
                                            "a label store (labels.zarr) or a run folder holding one."),
    out: Path = typer.Option(None, "--out", "-o", help="Output table, or (ome-zarr) folder for <plate>.ome.zarr."),
    format: str = typer.Option("parquet", "--format", "-f", help=f"One of {', '.join(FORMATS)}."),
    embeddings: str = typer.Option("all", help="parquet/csv: obsm embeddings to add as <rep>_0..n columns: "
                                               "'all', 'none', or keys separated by commas (X_simclr,...)."),
    features: bool = typer.Option(True, "--features/--no-features", help="parquet/csv: include the X features."),
    index: Path = typer.Option(None, help="ome-zarr: plate index (default: index.parquet beside the labels)."),
    levels: int = typer.Option(None, min=0, max=8, help="ome-zarr: downsampled pyramid levels (default: auto)."),
    in_place: bool = typer.Option(False, "--in-place", help="ome-zarr: add the labels to the OME-Zarr plates the "
                                                            "index was built from (no --out, images not copied)."),
):
    """Export a run: ``Metadata_<column>`` + features + embeddings table, or OME-Zarr images with NGFF labels."""
    if format not in FORMATS:
        fail(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if not source.exists():
        fail(f"{source} does not exist")
    if in_place and format != "ome-zarr":
        fail("--in-place goes with --format ome-zarr")
    if (out is None) != in_place:
        fail("--in-place writes into the indexed plates and takes no --out" if in_place else "give --out")
    if format == "ome-zarr":
        _export_omezarr(source, out, index, levels, in_place)
    else:
        _export_table(source, out, format, embeddings, features)


def _export_table(source: Path, out: Path, format: str, embeddings: str, features: bool) -> None:
    from .._atomic import atomic_path, check_output

    check_output(out, "file")
    import anndata as ad

    from ..features import to_pycytominer

    try:
        adata = ad.read_zarr(source) if source.is_dir() else ad.read_h5ad(source)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad input here
        fail(f"cannot read {source} as AnnData: {err}")
    keys = {"all": list(adata.obsm.keys()), "none": []}.get(embeddings)
    if keys is None:
        keys = [k.strip() for k in embeddings.split(",") if k.strip()]
    try:
        table = to_pycytominer(adata, obsm=keys, features=features)
    except ValueError as err:
        fail(str(err))
    with atomic_path(out) as tmp:
        if format == "parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)
    n_meta = sum(c.startswith("Metadata_") for c in table.columns)
    n_emb = sum(adata.obsm[k].shape[1] for k in keys)
    console.print(f"{len(table)} rows, {n_meta} metadata, {table.shape[1] - n_meta - n_emb} feature and {n_emb} "
                  f"embedding columns ({', '.join(keys) or 'no embeddings'}) -> {out}")


def _export_omezarr(source: Path, out: Path | None, index: Path | None, levels: int | None, in_place: bool) -> None:
    from ..io import PlateIndexError, read_index
    from ..io.labels import open_labels
    from ..io.omezarr_write import write_labels_in_place, write_plate

    labels = source / "labels.zarr" if (source / "labels.zarr").is_dir() else source
    index = index or labels.parent / "index.parquet"
    if not index.is_file():
        fail(f"no plate index at {index}; give it with --index")
    try:
        open_labels(labels)
        plate_index = read_index(index, check_files=True)
    except (ValueError, FileNotFoundError, PlateIndexError) as err:
        fail(str(err))
    try:
        with progress_bar("writing OME-Zarr fields", total=len(plate_index)) as update:
            if in_place:
                summary = write_labels_in_place(plate_index, labels, progress=update)
            else:
                summary = write_plate(plate_index, out, labels=labels, levels=levels, progress=update)
    except ValueError as err:
        fail(str(err))
    if in_place:
        console.print(f"{summary['fields']} fields: labels written now for {summary['labels_written']}, "
                      f"in the plates of {index}")
    else:
        console.print(f"{summary['fields']} fields in {len(summary['plates'])} plate(s): {summary['written']} "
                      f"fields written, {summary['labels_written']} with labels now -> {out}")
    if summary["no_labels"]:
        console.print(f"[yellow]warning:[/] {len(summary['no_labels'])} field(s) have no complete labels in "
                      f"{labels} (failed segmentation?), e.g. {summary['no_labels'][0]}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(export)
