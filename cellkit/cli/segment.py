"""``cellkit segment``, ``cellkit train-segmenter`` and ``cellkit score-segmentation``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer

from ._common import SCHEDULER_HELP, WORKERS_HELP, console, fail, progress_bar

BACKEND_HELP = ("auto (default: Cellpose nuclei weights when cached, else cellkit's shipped nucleus model; cells by "
                "cyto3 when cached, else grown from the nuclei), cellpose, or classical.")


def channel_roles(nuclei_channel: str | None, cell_channels: str | None, cell_expand: int | None) -> dict:
    """Segmenter channel-role keywords from the CLI options (``--cell-channels none``: no cell channels)."""
    roles = {}
    if nuclei_channel:
        roles["nuclear_channel"] = nuclei_channel
    if cell_channels is not None:
        names = [] if cell_channels.strip().lower() in ("", "none") else [c.strip() for c in cell_channels.split(",")]
        roles["cytoplasm_channels"] = tuple(c for c in names if c)
    if cell_expand is not None:
        if cell_expand < 0:
            fail(f"--cell-expand must be >= 0 px, got {cell_expand}")
        roles["cell_expand"] = int(cell_expand)
    return roles


def _segmenter(backend: str, model: str | None, cell_model: str, diameter: str | None, gpu: bool | None,
               classical: dict | None = None, roles: dict | None = None):
    from ..segment import ClassicalParams, WeightsNotFoundError, get_segmenter
    from ..segment.classical import THRESHOLD_METHODS

    classical = {k: v for k, v in (classical or {}).items() if v is not None}
    if classical.get("threshold_method", "local") not in THRESHOLD_METHODS:
        fail(f"--threshold-method must be one of {', '.join(THRESHOLD_METHODS)}")

    if diameter not in (None, "auto"):
        try:
            diameter = float(diameter)
        except ValueError:
            fail(f"--diameter must be a number of pixels or 'auto', got {diameter!r}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            segmenter = get_segmenter(backend, model=model, diameter=diameter, gpu=gpu,
                                      params=ClassicalParams(**classical), **(roles or {}),
                                      cell_model=None if cell_model.lower() in ("none", "classical") else cell_model)
        for w in caught:
            console.print(f"[yellow]warning:[/] {w.message}", highlight=False)
    except (WeightsNotFoundError, ValueError) as err:
        fail(str(err))
    return segmenter


def segment(
    index: Path = typer.Argument(..., help="Plate index (parquet from `cellkit index`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Label store to write (labels.zarr); reruns resume it."),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    model: str = typer.Option(None, help="Cellpose nucleus model: name (nuclei) or path to a trained model."),
    cell_model: str = typer.Option("cyto3", help="Cellpose cell model (name or path), or 'classical' to grow "
                                                 "cells from the nuclei by propagation."),
    diameter: str = typer.Option(None, help="Cellpose nucleus diameter in px, or 'auto' (measured per field)."),
    nuclei_channel: str = typer.Option(None, help="Channel holding the nuclear stain (default: the only channel, "
                                                  "or the only one named DNA/DAPI/Hoechst/...)."),
    cell_channels: str = typer.Option(None, help="Comma-separated cell-stain channels, boundary stain first, or "
                                                 "'none' (default: channels named Actin/Tubulin/CellMask/..., "
                                                 "else none)."),
    cell_expand: int = typer.Option(None, help="Without cell channels: cells = nuclei grown by this many px "
                                               "(CellProfiler 'Distance - N'); default 0: cells are the nuclei."),
    workers: int = typer.Option(1, help=WORKERS_HELP + " Processes."),
    scheduler: str = typer.Option(None, help=SCHEDULER_HELP),
    gpu: bool = typer.Option(None, "--gpu/--cpu", help="Cellpose device (default: GPU when torch sees one)."),
    threshold_method: str = typer.Option(None, help="Classical nuclei threshold: local (default), otsu, li, log_otsu."),
    nucleus_diameter: float = typer.Option(None, help="Classical: nucleus diameter in px (default: estimated)."),
    min_nucleus_area: int = typer.Option(None, help="Drop nuclei under this many px (default 15)."),
    max_nucleus_area: int = typer.Option(None, help="Drop nuclei over this many px (default: no limit)."),
    min_cell_area: int = typer.Option(None, help="Drop cells (and their nucleus) under this many px (default 50)."),
):
    """Segment nuclei and cells in every field of a plate index into a label store."""
    from .. import io
    from .._atomic import check_output
    from ..io import PlateIndexError, read_index
    from ..io.labels import FORMAT
    from ..segment import qc_path, segment_plate

    check_output(out, "dir", FORMAT)

    try:
        plate_index = read_index(index)
    except (PlateIndexError, FileNotFoundError, OSError) as err:
        fail(f"cannot read plate index {index}: {err}")
    segmenter = _segmenter(backend, model, cell_model, diameter, gpu, dict(
        threshold_method=threshold_method, nucleus_diameter=nucleus_diameter, min_nucleus_area=min_nucleus_area,
        max_nucleus_area=max_nucleus_area, min_cell_area=min_cell_area),
        channel_roles(nuclei_channel, cell_channels, cell_expand))
    try:
        segmenter = segmenter.with_roles(io.channels_of(plate_index))
    except ValueError as err:
        fail(str(err))
    cells_from = segmenter.describe()["cells_from"]
    console.print(f"segmenting {len(plate_index)} fields with the {segmenter.name} backend -> {out}: nuclei from "
                  f"{segmenter.nuclear_channel}, cells from {cells_from}", highlight=False)
    with progress_bar("segmenting fields", total=len(plate_index)) as update:
        qc = segment_plate(plate_index, out, segmenter, workers=workers, scheduler=scheduler, progress=update)
    failed = qc[qc.status != "ok"]
    ok = qc[qc.status == "ok"]
    empty = int(ok["empty"].astype(bool).sum())
    console.print(f"{len(ok)} fields segmented ({int(ok.n_cells.sum())} cells; {empty} empty: no foreground "
                  f"above noise), {len(failed)} failed; QC table: {qc_path(out)}")
    for row in failed.itertuples():
        console.print(f"[red]failed[/] {row.field_id}: {row.error}", highlight=False)
    if len(failed):
        fail(f"{len(failed)} of {len(qc)} fields failed (see {qc_path(out)}); fix the cause shown above and rerun "
             "the same command: fields already segmented are kept")


def train_segmenter(
    images: Path = typer.Argument(..., help="Folder of single-channel training images."),
    masks: Path = typer.Argument(..., help="Folder of label images with the same file stems."),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write (plus MODEL.json with the report)."),
    checkpoint: Path = typer.Option(None, help="Checkpoint file, overwritten as training goes (default MODEL.ckpt)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the checkpoint (same data and settings; "
                                                        "--epochs may grow)."),
    epochs: int = typer.Option(100, help="Training epochs in total (passes of --images-per-epoch patches)."),
    stop_after_epoch: int = typer.Option(None, help="Stop at this epoch with a checkpoint (resume later)."),
    export_only: bool = typer.Option(False, "--export-only", help="Write MODEL from the checkpoint's best "
                                                                  "weights without training."),
    batch_size: int = typer.Option(8, help="Patches per optimisation step."),
    learning_rate: float = typer.Option(0.005, help="Peak learning rate (Cellpose's schedule)."),
    patch_size: int = typer.Option(128, help="Training patch side in px (multiple of 16)."),
    nbase: str = typer.Option(None, help="CPnet channel widths, default 16,32,64,128 (Cellpose's own: "
                                         "32,64,128,256, about 3x slower per step on a CPU)."),
    images_per_epoch: int = typer.Option(64, help="Patches per epoch."),
    validation_fraction: float = typer.Option(0.1, help="Seeded fraction of pairs held out for the learning "
                                                         "curve and the best weights (0: none)."),
    eval_every: int = typer.Option(10, help="Epochs between held-out evaluations."),
    checkpoint_every: int = typer.Option(5, help="Epochs between checkpoints."),
    diam_mean: float = typer.Option(17.0, help="Object diameter (px) the network works at."),
    pretrained: str = typer.Option(None, help="Start from these weights (a model file) instead of scratch."),
    seed: int = typer.Option(0, help="Random seed (split, initialisation, patches, augmentation)."),
    flow_cache: Path = typer.Option(None, help="Folder caching the Cellpose flows of the masks "
                                               "(default ~/.cache/cellkit/flows)."),
    threads: int = typer.Option(None, help="CPU threads for torch (1 is fastest on a busy machine)."),
    gpu: bool = typer.Option(None, "--gpu/--cpu", help="Accepted for compatibility; training runs on the CPU."),
):
    """Train a Cellpose model from image/mask pairs, resumably, and report held-out accuracy."""
    from ..segment import ModelArchitectureError, WeightsNotFoundError
    from ..segment.train import train_segmenter as train

    if patch_size % 16:
        fail("--patch-size must be a multiple of 16")
    if not 0 <= validation_fraction < 1:
        fail("--validation-fraction must be in [0, 1)")
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        widths = [int(w) for w in nbase.split(",")] if nbase else None
    except ValueError:
        fail(f"--nbase must be comma-separated integers, got {nbase!r}")
    if widths is not None and (len(widths) != 4 or min(widths) < 1):
        fail(f"--nbase needs 4 positive channel widths (one per CPnet level), got {nbase!r}")
    try:
        report = train(images, masks, out, checkpoint=checkpoint, resume=resume, epochs=epochs,
                       stop_after_epoch=stop_after_epoch, export_only=export_only, batch_size=batch_size,
                       learning_rate=learning_rate, patch_size=patch_size, nbase=widths,
                       images_per_epoch=images_per_epoch, validation_fraction=validation_fraction,
                       eval_every=eval_every, checkpoint_every=checkpoint_every, diam_mean=diam_mean,
                       pretrained=pretrained, seed=seed,
                       flow_cache=str(flow_cache) if flow_cache else "default",
                       log=lambda m: console.print(m, highlight=False))
    except (WeightsNotFoundError, ModelArchitectureError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    if not report.get("exported", True):
        typer.echo(json.dumps(report))
        return
    best = report["validation"] or {}
    typer.echo(json.dumps({"model": str(out), "validation_ap@0.5": best.get("ap@0.5"),
                           "validation_ap@0.75": best.get("ap@0.75"), "epochs": report["epochs_trained"],
                           "exported_epoch": report["exported_epoch"], "steps": report["steps"],
                           "nbase": report["architecture"]["nbase"], "sha256": report["sha256"]}))


def score_segmentation(
    images: Path = typer.Option(..., help="Folder of single-channel images."),
    masks: Path = typer.Option(..., help="Folder of ground-truth label images (same file stems)."),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    model: str = typer.Option(None, help="Cellpose nucleus model: name or path."),
    diameter: str = typer.Option(None, help="Cellpose diameter in px, or 'auto'."),
    out: Path = typer.Option(None, "--out", "-o", help="JSON file to write (default: print only)."),
    gpu: bool = typer.Option(None, "--gpu/--cpu", help="Cellpose device (default: GPU when torch sees one)."),
    threshold_method: str = typer.Option(None, help="Classical nuclei threshold: local (default), otsu, li, log_otsu."),
):
    """Segment images as nuclei and print average precision at IoU 0.5 and 0.75 (per image, pooled)."""
    from .._atomic import atomic_path
    from ..segment.evaluate import score_segmenter

    if out:
        from .._atomic import check_output

        check_output(out, "file")
    segmenter = _segmenter(backend, model, "none", diameter, gpu, {"threshold_method": threshold_method})
    try:
        result = score_segmenter(segmenter, images, masks)
    except (FileNotFoundError, ValueError, OSError) as err:
        fail(str(err))
    for row in result["per_image"]:
        console.print(f"  {row['name'][:40]:<40} true {row['n_true']:>4}  pred {row['n_pred']:>4}  "
                      f"AP@0.5 {row['ap@0.5']:.3f}  AP@0.75 {row['ap@0.75']:.3f}", highlight=False)
    pooled = result["pooled"]
    console.print(f"pooled over {pooled['n_images']} images: AP@0.5 {pooled['ap@0.5']:.3f}  "
                  f"AP@0.75 {pooled['ap@0.75']:.3f}", highlight=False)
    if out:
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    typer.echo(json.dumps(pooled))


def register(app: typer.Typer) -> None:
    app.command()(segment)
    app.command("train-segmenter")(train_segmenter)
    app.command("score-segmentation")(score_segmentation)
