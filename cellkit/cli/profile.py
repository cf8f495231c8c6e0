"""``cellkit profile``, ``cellkit evaluate`` and ``cellkit import-profiles``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail, parse_pairs

CONTROL = "compound == 'DMSO'"


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _load_profiles(path: Path, metadata: list[str], bbbc021_image: Path | None, bbbc021_moa: Path | None,
                   metadata_cols: str = ""):
    from ..errors import CellkitError
    from ..io import ProfileTableError, join_bbbc021, read_profiles

    rename = parse_pairs(metadata, "--metadata")
    kwargs = {"metadata": rename} if rename else {}
    if metadata_cols and path.suffix not in (".h5ad", ".zarr"):
        kwargs["metadata_cols"] = _split(metadata_cols)
    try:
        adata = read_profiles(path, **kwargs)
        if bbbc021_image is not None:
            join_bbbc021(adata, bbbc021_image, bbbc021_moa)
    except CellkitError:  # stale or unreadable: one line with its hint (the CLI's handler)
        raise
    except (FileNotFoundError, ProfileTableError, ValueError) as err:
        fail(str(err))
    return adata


def _steps(preset: str, **options) -> dict:
    from ..workflows.profiles import PRESETS, recipe

    if preset not in PRESETS:
        fail(f"--preset must be one of {list(PRESETS)}, got {preset!r}")
    steps = recipe(preset, **options)
    if steps.get("clip") == 0:
        steps["clip"] = None  # --clip 0: no clipping
    if steps.get("n_comps") == 0:
        steps["n_comps"] = None  # --n-comps 0: no PCA
    return steps


PRESET_HELP = ("Profile recipe: default (chosen by nested validation on BBBC021 with a flatness rule: IQM "
               "normalization vs controls per plate, clip 9, feature selection, ZCA spherize eps 3 on controls, "
               "PCA to 100 components, unit-length wells, mean), nopca (the same rule without the PCA step: IQM clip "
               "4, ZCA-cor eps 1, median of wells), previous (IQM clip 9, ZCA-cor eps 3, unit-length wells, mean), "
               "plain (zscore, mean), best (robust clip 8, select, ZCA-cor eps 1, unit-length wells, mean) or none "
               "(rows as given). The options below override single steps.")
N_COMPS_HELP = ("PCA of the spherized wells to this many components (scanpy, seeded; at most wells - 1 and "
                "features - 1), before unit length; 0: no PCA.")
CORRECT_HELP = ("Batch / plate-position correction: none, position (row/column median polish), combat (scanpy), "
                "tvn-batch (spherize per batch), harmony (harmonypy). Measured in docs/profiles.md.")


def _batch_column(adata, batch: str) -> str | None:
    """The batch column for NSCB: ``batch``; else the plate-name prefix (``Week4_27481`` -> ``Week4``) when every
    plate name has one; else None (NSCB skipped). Says which."""
    if not batch:
        return None
    if batch in adata.obs:
        return batch
    plates = adata.obs["plate"].astype(str) if "plate" in adata.obs else None
    if plates is not None and plates.str.contains("_").all():
        adata.obs[batch] = plates.str.split("_").str[0].to_numpy()
        console.print(f"obs has no {batch!r} column: batch = plate-name prefix ({plates.iloc[0]} -> "
                      f"{adata.obs[batch].iloc[0]}; {adata.obs[batch].nunique()} batches)")
        return batch
    console.print(f"[yellow]obs has no {batch!r} column and plate names have no batch prefix: NSCB skipped[/]")
    return None


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


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
    clip: float = typer.Option(None, help="Clip normalized values to [-CLIP, CLIP] (0: no clipping)."),
    n_comps: int = typer.Option(None, help=N_COMPS_HELP),
    l2: bool = typer.Option(None, "--l2/--no-l2", help="Scale each well to unit length."),
    correct: str = typer.Option("none", help=CORRECT_HELP),
    batch: str = typer.Option("batch", help="Obs column with the batch (for --correct)."),
    treatment_func: str = typer.Option(None, help="Wells -> treatments: mean or median."),
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
    steps = _steps(preset, normalize=normalize, select=select, spherize=spherize, epsilon=epsilon, clip=clip, l2=l2,
                   treatment_func=treatment_func, n_comps=n_comps)
    if correct != "none":
        steps.update(correct=correct, batch=batch)
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
    batch: str = typer.Option("batch", help="Obs column with the batch ('' to skip NSCB; when absent: the "
                              "plate-name prefix if plates are named BATCH_PLATE)."),
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
    n_comps: int = typer.Option(None, help=N_COMPS_HELP),
    l2: bool = typer.Option(None, "--l2/--no-l2", help="Scale each well to unit length before averaging."),
    correct: str = typer.Option("none", help=CORRECT_HELP),
    use_rep: str = typer.Option(None, help="Score obsm[USE_REP] instead of X."),
    metadata: list[str] = typer.Option([], help="Table metadata column: NAME=COLUMN (beside Metadata_*). Repeat."),
    metadata_cols: str = typer.Option("", help="Table columns that are metadata (comma separated). Default: the "
                                      "Metadata_* columns, else every non-numeric column and numeric ones named "
                                      "like metadata (plate, well, concentration, ...)."),
    bbbc021_image: Path = typer.Option(None, help="Join BBBC021_v1_image.csv(.gz) on plate+well."),
    bbbc021_moa: Path = typer.Option(None, help="With --bbbc021-image: BBBC021_v1_moa.csv for the MOA."),
    out_dir: Path = typer.Option(Path("evaluation"), help="Folder for moa_accuracy.csv, tables and figures."),
    figures: bool = typer.Option(True, help="Write figures."),
):
    """Score profiles against MOA labels: NSC / NSCB 1-NN accuracy, mAP, leave-one-compound-out."""
    import json

    from ..workflows.profiles import (evaluate_profiles, json_ready, prepare_profiles, processed_by_cellkit,
                                      profile_rep, recorded_rep, recorded_treatment_func)

    options = dict(normalize=normalize, clip=clip, select=select, spherize=spherize, epsilon=epsilon, l2=l2,
                   treatment_func=treatment_func, n_comps=n_comps)
    adata = _load_profiles(profiles, metadata, bbbc021_image, bbbc021_moa, metadata_cols)
    for column, what in ((label, "label (MOA)"), (compound, "compound")):
        if column not in adata.obs or adata.obs[column].isna().all():
            state = "no column" if column not in adata.obs else "a column with no values"
            fail(f"cannot score {profiles}: it has {state} {column!r}, and the MOA scores need a {what} per "
                 "profile. Add compound / concentration / moa to the plate index (`cellkit index ... --metadata "
                 "FILE`) and rerun extract and profile, or name another obs column with --label / --compound")
    done = processed_by_cellkit(adata)
    if done and preset == "default" and correct == "none" and all(v is None for v in options.values()):
        options["treatment_func"] = recorded_treatment_func(adata)
        use_rep = use_rep or recorded_rep(adata)
        console.print(f"input already processed by cellkit ({', '.join(done)}): scored as is (--preset none, "
                      f"treatment = {options['treatment_func']} of wells" + (f" in obsm[{use_rep!r}]" if use_rep else "")
                      + ")")
        preset = "none"
    steps = _steps(preset, **options)
    try:
        batch_col = _batch_column(adata, batch)
        treatments = prepare_profiles(adata, control=control, plate=plate, use_rep=use_rep,
                                      treatment=_split(treatment), correct=correct, batch=batch_col or "batch",
                                      **steps)
        # treatments hold the representation used in X; rows scored as given keep it where it is
        rep = None if _split(treatment) else profile_rep(use_rep, correct, steps.get("n_comps"))
        summary = evaluate_profiles(treatments, out_dir, label=label, compound=compound, batch=batch_col,
                                    control=control, use_rep=rep, figures=figures)
    except (KeyError, ValueError) as err:
        fail(str(err).strip('"'))
    console.print(f"[bold]{summary['n_profiles']} profiles[/] ({label}: {summary['n_labels']} labels); "
                  f"recipe {preset}: {steps}" + (f", correct={correct}" if correct != "none" else ""))
    console.print(f"  NSC  {_pct(summary['NSC'])}  ({summary['n_NSC']} scored)")
    console.print(f"  NSCB {_pct(summary['NSCB'])}  ({summary['n_NSCB']} scored; excluded: "
                  f"{len(summary['excluded_NSCB'])})")
    map_text = "n/a" if summary["mAP"] is None else f"{summary['mAP']:.3f}"
    console.print(f"  mAP  {map_text}   leave-one-compound-out accuracy {_pct(summary['LOCO'])}")
    typer.echo(json.dumps(json_ready({k: summary[k] for k in ("NSC", "NSCB", "n_NSC", "n_NSCB", "mAP", "LOCO")}),
                          allow_nan=False))
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
