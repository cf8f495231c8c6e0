"""``cellkit profile``, ``cellkit evaluate`` and ``cellkit import-profiles``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail, parse_pairs

CONTROL = "compound == 'DMSO'"


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _load_profiles(path: Path, metadata: list[str], bbbc021_image: Path | None, bbbc021_moa: Path | None):
    from ..io import ProfileTableError, join_bbbc021, read_profiles

    rename = parse_pairs(metadata, "--metadata")
    try:
        adata = read_profiles(path, **({"metadata": rename} if rename else {}))
        if bbbc021_image is not None:
            join_bbbc021(adata, bbbc021_image, bbbc021_moa)
    except (FileNotFoundError, ProfileTableError, ValueError) as err:
        fail(str(err))
    return adata


def _steps(preset: str, **options) -> dict:
    from ..workflows.profiles import PRESETS, recipe

    if preset not in PRESETS:
        fail(f"--preset must be one of {list(PRESETS)}, got {preset!r}")
    return recipe(preset, **options)


PRESET_HELP = ("Profile recipe: default (zscore vs controls per plate, drop NaN / constant features, mean), "
               "plain (zscore, mean), best (robust clip 8, select, ZCA-cor eps 1, unit-length wells, mean) or none "
               "(rows as given). The options below override single steps.")


def profile(
    cells: Path = typer.Argument(..., help="Cells AnnData (.h5ad, read backed, or AnnData .zarr)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output wells .h5ad."),
    by: str = typer.Option("plate,well", help="Obs columns defining a well (comma separated)."),
    func: str = typer.Option("mean", help="Aggregation: mean or median."),
    use_rep: str = typer.Option(None, help="Aggregate obsm[USE_REP] instead of X (e.g. X_simclr)."),
    control: str = typer.Option(CONTROL, help="Obs query selecting control wells."),
    preset: str = typer.Option("default", help=PRESET_HELP),
    normalize: str = typer.Option(None, help="Per-plate normalization vs controls: zscore, robust, iqm or none."),
    plate: str = typer.Option("plate", help="Obs column normalized separately."),
    select: bool = typer.Option(None, "--select/--no-select",
                                help="Feature selection (blocklist, NaN, variance, correlation)."),
    spherize: str = typer.Option(None, help="Spherize on the controls: none, zca, pca, zca-cor, pca-cor."),
    epsilon: float = typer.Option(None, help="Spherize regularizer (relative to the mean eigenvalue)."),
    treatments: Path = typer.Option(None, help="Also write treatment profiles (.h5ad) here."),
    treatment: str = typer.Option("compound,concentration", help="Obs columns defining a treatment."),
    chunk_size: int = typer.Option(25_000, help="Cells read at a time."),
    qc: Path = typer.Option(None, help="qc_fields.csv (or qc.csv) of cellkit qc: leave out the cells of fields "
                            "that failed QC (counts printed and kept in uns['cellkit']['qc'])."),
    drop_duplicates: bool = typer.Option(False, "--drop-duplicates",
                                         help="Keep the first row of a cell id seen more than once (default: "
                                              "such a table is an error)."),
):
    """Aggregate cells to wells (out of core), then the profile recipe: normalize, select, spherize."""
    import warnings

    from .._atomic import atomic_path, check_output
    from ..errors import CellkitError
    from ..workflows.profiles import profile_cells

    check_output(out, "file")
    if treatments is not None:
        check_output(treatments, "file")
    steps = _steps(preset, normalize=normalize, select=select, spherize=spherize, epsilon=epsilon)
    try:
        source, qc_counts = cells, None
        if qc is not None:
            import anndata as ad
            import pandas as pd

            from ..qc import exclude_flagged

            source = exclude_flagged(ad.read_h5ad(cells), pd.read_csv(qc))
            qc_counts = source.uns["cellkit"]["qc"]
            console.print(f"QC: {qc_counts['fields_flagged']} of {qc_counts['fields_checked']} fields flagged, "
                          f"{qc_counts['rows_removed']} cells left out, {qc_counts['rows_kept']} kept")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            wells, treated = profile_cells(source, by=_split(by), func=func, use_rep=use_rep, chunk_size=chunk_size,
                                           control=control, plate=plate,
                                           treatment=_split(treatment) if treatments is not None else None,
                                           duplicates="drop" if drop_duplicates else "error", **steps)
        for w in caught:
            console.print(f"[yellow]warning:[/] {w.message}")
    except CellkitError:
        raise
    except (KeyError, ValueError, FileNotFoundError) as err:
        fail(str(err).strip('"'))
    console.print(f"aggregated {wells.obs['n_cells'].sum()} cells into {wells.n_obs} wells, {wells.n_vars} features")
    if qc_counts is not None:
        for table in (wells, treated):
            if table is not None:
                table.uns.setdefault("cellkit", {})["qc"] = qc_counts
    from ..features.table import categorical_obs

    wells.obs = categorical_obs(wells.obs)  # missing compound / MOA write as missing values
    if treated is not None:
        treated.obs = categorical_obs(treated.obs)
    with atomic_path(out) as tmp:
        wells.write_h5ad(tmp)
    console.print(f"wells -> {out}")
    if treated is not None:
        with atomic_path(treatments) as tmp:
            treated.write_h5ad(tmp)
        console.print(f"{treated.n_obs} treatments -> {treatments}")


def evaluate(
    profiles: Path = typer.Argument(..., help="Well (or treatment) profiles: .h5ad, .csv[.gz] or .parquet."),
    label: str = typer.Option("moa", help="Obs column with the label (MOA)."),
    compound: str = typer.Option("compound", help="Obs column with the compound."),
    batch: str = typer.Option("batch", help="Obs column with the batch ('' to skip NSCB)."),
    control: str = typer.Option(CONTROL, help="Obs query selecting controls (left out of scoring)."),
    treatment: str = typer.Option("compound,concentration",
                                  help="Obs columns defining a treatment; '' to score the rows as given."),
    preset: str = typer.Option("default", help=PRESET_HELP),
    treatment_func: str = typer.Option(None, help="Wells -> treatment: mean or median."),
    normalize: str = typer.Option(None, help="Normalize per plate vs controls first: none, zscore, robust, iqm."),
    plate: str = typer.Option("plate", help="Obs column normalized separately."),
    clip: float = typer.Option(None, help="Clip normalized values to [-CLIP, CLIP]."),
    select: bool = typer.Option(None, "--select/--no-select", help="Feature selection before scoring."),
    spherize: str = typer.Option(None, help="Spherize on the controls: none, zca, pca, zca-cor, pca-cor."),
    epsilon: float = typer.Option(None, help="Spherize regularizer (relative to the mean eigenvalue)."),
    l2: bool = typer.Option(None, "--l2/--no-l2", help="Scale each well to unit length before averaging."),
    use_rep: str = typer.Option(None, help="Score obsm[USE_REP] instead of X."),
    metadata: list[str] = typer.Option([], help="Table metadata column: NAME=COLUMN (beside Metadata_*). Repeat."),
    bbbc021_image: Path = typer.Option(None, help="Join BBBC021_v1_image.csv(.gz) on plate+well."),
    bbbc021_moa: Path = typer.Option(None, help="With --bbbc021-image: BBBC021_v1_moa.csv for the MOA."),
    out_dir: Path = typer.Option(Path("evaluation"), help="Folder for moa_accuracy.csv, tables and figures."),
    figures: bool = typer.Option(True, help="Write figures."),
):
    """Score profiles against MOA labels: NSC / NSCB 1-NN accuracy, mAP, leave-one-compound-out."""
    import json

    from ..workflows.profiles import evaluate_profiles, prepare_profiles

    steps = _steps(preset, normalize=normalize, clip=clip, select=select, spherize=spherize, epsilon=epsilon,
                   l2=l2, treatment_func=treatment_func)
    adata = _load_profiles(profiles, metadata, bbbc021_image, bbbc021_moa)
    try:
        treatments = prepare_profiles(adata, control=control, plate=plate, use_rep=use_rep,
                                      treatment=_split(treatment), **steps)
        summary = evaluate_profiles(treatments, out_dir, label=label, compound=compound, batch=batch or None,
                                    control=control, use_rep=use_rep, figures=figures)
    except (KeyError, ValueError) as err:
        fail(str(err).strip('"'))
    console.print(f"[bold]{summary['n_profiles']} profiles[/] ({label}: {summary['n_labels']} labels)")
    nscb = f"{100 * summary['NSCB']:.1f}%" if summary["NSCB"] is not None else "n/a"
    console.print(f"  NSC  {100 * summary['NSC']:.1f}%  ({summary['n_NSC']} scored)")
    console.print(f"  NSCB {nscb}  ({summary['n_NSCB']} scored; excluded: {len(summary['excluded_NSCB'])})")
    console.print(f"  mAP  {summary['mAP']:.3f}   leave-one-compound-out accuracy {100 * summary['LOCO']:.1f}%")
    typer.echo(json.dumps({k: summary[k] for k in ("NSC", "NSCB", "n_NSC", "n_NSCB", "mAP", "LOCO")}))
    console.print(f"results -> {out_dir}")


def import_profiles(
    table: Path = typer.Argument(..., help="CellProfiler-style table (.csv[.gz] or .parquet), per cell or per well."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .h5ad."),
    metadata: list[str] = typer.Option([], help="Metadata column: NAME=COLUMN (beside Metadata_*). Repeat."),
    bbbc021_image: Path = typer.Option(None, help="Join BBBC021_v1_image.csv(.gz) on plate+well."),
    bbbc021_moa: Path = typer.Option(None, help="With --bbbc021-image: BBBC021_v1_moa.csv for the MOA."),
):
    """Turn a CellProfiler / pycytominer profile table into an AnnData (.h5ad)."""
    from .._atomic import atomic_path, check_output

    check_output(out, "file")
    adata = _load_profiles(table, metadata, bbbc021_image, bbbc021_moa)
    with atomic_path(out) as tmp:
        adata.write_h5ad(tmp)
    console.print(f"{adata.n_obs} profiles x {adata.n_vars} features, obs {list(adata.obs.columns)} -> {out}")


def register(app: typer.Typer) -> None:
    app.command()(profile)
    app.command()(evaluate)
    app.command("import-profiles")(import_profiles)
