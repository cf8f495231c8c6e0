"""``cellkit train``, ``cellkit embed`` and ``cellkit import-crops``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail, progress_bar


def train(
    cells: Path = typer.Argument(..., help="cells.zarr to train on."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder (config.json, model.safetensors, checkpoint.pt)."),
    method: str = typer.Option("simclr", help="simclr, byol, autoencoder, mae (ViT masked autoencoder; "
                                "needs the hf extra), weak (treatment labels: compound + concentration, never the "
                                "MOA), pca, or random (the untrained control)."),
    config: Path = typer.Option(None, help="JSON or YAML file of training options (see cellkit.models.DEFAULTS)."),
    preset: str = typer.Option(None, help="cpu-small (minutes on 2 cores) or gpu (larger ResNet, longer schedule, "
                                "mixed precision on CUDA): starting options, overridden by the others."),
    epochs: int = typer.Option(None, help="Epochs (default 10)."),
    batch_size: int = typer.Option(None, help="Crops per batch (default 128)."),
    lr: float = typer.Option(None, help="Peak learning rate (cosine decay; default 1e-3)."),
    width: int = typer.Option(None, help="Encoder width: channels of the first stage (default 32)."),
    depth: int = typer.Option(None, help="Residual blocks per stage (default 1); for mae, transformer blocks (default 4)."),
    patch_size: int = typer.Option(None, help="mae: patch side in pixels (default 8)."),
    mask_ratio: float = typer.Option(None, help="mae: fraction of patches hidden during training (default 0.75)."),
    weak_loss: str = typer.Option(None, help="weak: ce (classify the treatments), supcon (supervised contrastive) "
                                  "or ce+supcon."),
    weak_group: str = typer.Option(None, help="weak: obs column(s), comma-separated (e.g. batch): contrast and "
                                   "classify each cell only against its own group's treatments; none: all "
                                   "together; auto (default): batch when the store has 2+ batches."),
    weak_adversary: float = typer.Option(None, help="weak: weight of a batch (group) classifier trained through a "
                                         "reversed gradient, pushing the embedding to forget the batch (0: none)."),
    norm_by: str = typer.Option(None, help="obs column(s), comma-separated (e.g. plate): bring each one's mean "
                                "intensity per channel (of its DMSO cells) to one level before the encoder; none: "
                                "the store's global statistics; auto (simclr, byol, random, weak): plate when the "
                                "store has it."),
    positive_by: str = typer.Option(None, help="simclr: obs column(s), comma-separated (e.g. plate,well): cells "
                                    "sharing them are each other's positives, beside the two views of a cell; none: "
                                    "the two views alone; auto (default): plate,well when the store has them."),
    contrast_within: str = typer.Option(None, help="simclr with positive-by: obs column(s) (e.g. plate): contrast "
                                        "each cell only with its own group's cells; none: with all; auto (default): "
                                        "plate when the store has it."),
    max_cells: int = typer.Option(None, help="Train on about this many cells (whole chunks spread over the store)."),
    seed: int = typer.Option(None, help="Random seed (default 0)."),
    workers: int = typer.Option(None, help="DataLoader workers reading chunks (default 2)."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last finished epoch."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model folder."),
):
    """Train an encoder (or fit PCA) on the crops of a cells.zarr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .. import models
    from ..io.cells import IncompleteStoreError

    try:
        options = models.read_config_file(config) if config else {}
    except (OSError, ValueError) as err:
        fail(f"cannot read {config}: {err}")
    options = models.training_options(method, options, depth=depth, epochs=epochs, batch_size=batch_size, lr=lr,
                                      width=width, max_cells=max_cells, seed=seed, num_workers=workers,
                                      patch_size=patch_size, mask_ratio=mask_ratio, preset=preset,
                                      weak_loss=weak_loss, weak_adversary=weak_adversary,
                                      weak_group=weak_group, norm_by=norm_by, positive_by=positive_by,
                                      contrast_within=contrast_within)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("training", total=None)

        def progress(epoch, n_epochs, step, steps, loss):
            text = f"epoch {epoch}/{n_epochs}" + ("" if loss != loss else f" loss {loss:.4f}")
            bar.update(task, completed=step, total=steps, description=text)

        try:
            models.train(cells, out, method=method, config=options, resume=resume, overwrite=overwrite,
                         device=device, progress=progress)
        except (FileNotFoundError, FileExistsError, IncompleteStoreError, ValueError, FloatingPointError,
                ImportError) as err:
            fail(str(err))
    console.print(f"model written to {out}")


def embed(
    cells: Path = typer.Argument(..., help="cells.zarr whose crops are embedded."),
    model: str = typer.Option(..., "--model", "-m", help="Model folder written by `cellkit train`, or hf:NAME_OR_PATH "
                              "for a Hugging Face ViT-MAE (local folder or local cache; needs the hf extra)."),
    adata: Path = typer.Option(..., "--adata", help="cells.h5ad to write into (created from the store's obs if absent)."),
    key: str = typer.Option(None, help="obsm key (default X_<method>: X_simclr, X_byol, X_ae, X_pixel_pca, X_random, X_mae)."),
    channel_mode: str = typer.Option("rgb", help="hf models: rgb (first 3 channels as R, G, B) or per-channel "
                                     "(each channel alone, embeddings concatenated)."),
    pool: str = typer.Option("mean", help="hf models: mean of the patch tokens, or cls."),
    batch_size: int = typer.Option(256, help="Crops per batch."),
    workers: int = typer.Option(0, help="DataLoader workers reading chunks."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
):
    """Embed every crop with a trained model into obsm of an h5ad, aligned by cell_id."""
    from .. import models
    from ..io.cells import IncompleteStoreError

    try:
        with progress_bar("embedding cells") as update:
            models.embed_h5ad(cells, model, adata, key_added=key, batch_size=batch_size, num_workers=workers,
                              device=device, progress=update, hf_options={"channel_mode": channel_mode, "pool": pool})
    except (FileNotFoundError, IncompleteStoreError, models.IncompleteModelError, KeyError, ValueError,
            ImportError) as err:
        fail(str(err).strip("'\""))
    console.print(f"embeddings written to {adata}")


def import_crops(
    npz: Path = typer.Argument(..., help="npz with a 'crops' array (N, S, S, C) uint16, channels last."),
    index: Path = typer.Argument(..., help="index.csv: one row per crop (cell_idx, plate, well, site, compound, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="cells.zarr to write."),
    adata: Path = typer.Option(None, "--adata", help="Also write an h5ad of the cells' metadata."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store."),
):
    """Import the real BBBC021 single-cell crops (npz + index.csv) as a cells.zarr (masks: all True)."""
    from ..io import import_bbbc021_crops

    try:
        import_bbbc021_crops(npz, index, out, adata, overwrite=overwrite)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, TypeError) as err:
        fail(str(err).strip("'\""))
    console.print(f"crops written to {out}" + (f", metadata to {adata}" if adata else ""))


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(embed)
    app.command("import-crops")(import_crops)
