"""``cellkit tiles`` (fields or tiles of fields as a cells.zarr, to train on), ``cellkit embed-images`` and
``cellkit image-report`` (IQM normalization, cosine similarity, t-SNE of image embeddings)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail, progress_bar
from .qc import _read_index

POLICY_HELP = "resize (whole field to SIZE x SIZE) or tile (scale by SCALE, cut SIZE x SIZE tiles, average them)."


def _names(text: str | None):
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def tiles(
    source: Path = typer.Argument(..., help="Plate index (.parquet/.csv) or a folder of single-channel images."),
    out: Path = typer.Option(..., "--out", "-o", help="New cells.zarr holding one row per tile (or field)."),
    size: int = typer.Option(64, help="Tile side in pixels."),
    policy: str = typer.Option("tile", help=POLICY_HELP),
    scale: float = typer.Option(1.0, help="Downscale factor of the fields before tiling (0-1]."),
    channel: str = typer.Option(None, help="Index channels to use, comma separated (default all)."),
    name: str = typer.Option(None, help="Channel names in the store, comma separated (e.g. 'image')."),
    regex: str = typer.Option(None, help="Folder input: regex with (?P<well>...) and (?P<site>...) groups."),
    overwrite: bool = typer.Option(False, help="Replace an existing store."),
):
    """Write fields (resized) or tiles of fields as a cells.zarr, e.g. to train an MAE or SimCLR on (cellkit train)."""
    from ..models.images import write_tiles

    try:
        index = _read_index(source, regex)
        with progress_bar("tiles") as update:
            write_tiles(index, out, size=size, policy=policy, scale=scale, channels=_names(channel),
                        channel_names=_names(name), overwrite=overwrite, progress=update)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError, OSError) as err:
        fail(str(err).strip("'\""))
    console.print(f"tiles of {len(index)} fields -> {out}")


def embed_images(
    source: Path = typer.Argument(..., help="Plate index (.parquet/.csv) or a folder of single-channel images."),
    model: str = typer.Option(..., "--model", "-m", help="cellkit model folder or hf:NAME_OR_PATH (a local ViT-MAE)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .h5ad: one row per image, obsm[KEY]."),
    policy: str = typer.Option(None, help=POLICY_HELP + " Default: resize for hf:, tile for cellkit models."),
    size: int = typer.Option(None, help="Input side (default: the model's input size)."),
    scale: float = typer.Option(1.0, help="tile policy: downscale factor of the fields before tiling."),
    channel: str = typer.Option(None, help="Index channels to use, comma separated (default all)."),
    name: str = typer.Option(None, help="Names the model knows these channels by, comma separated."),
    channel_mode: str = typer.Option("rgb", help="hf: rgb (3 channels as R, G, B) or per-channel (concatenated)."),
    pool: str = typer.Option("mean", help="hf: mean of the patch tokens or cls."),
    key: str = typer.Option(None, help="obsm key (default X_<method>, X_mae for hf:)."),
    regex: str = typer.Option(None, help="Folder input: regex with (?P<well>...) and (?P<site>...) groups."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
):
    """Embed whole images (fields or tiles of fields) with a cellkit model or a local ViT-MAE."""
    from .._atomic import atomic_path
    from ..models.images import embed_images as run

    try:
        index = _read_index(source, regex)
        with progress_bar("embedding") as update:
            adata = run(index, model, policy=policy, size=size, scale=scale, channels=_names(channel),
                        channel_names=_names(name), channel_mode=channel_mode, pool=pool, key_added=key,
                        device=device, progress=update)
        with atomic_path(out) as tmp:
            adata.write_h5ad(tmp)
    except (FileNotFoundError, ValueError, KeyError, OSError, ImportError) as err:
        fail(str(err).strip("'\""))
    key = next(iter(adata.obsm))
    console.print(f"{adata.n_obs} images -> {out} (obsm[{key!r}], {adata.obsm[key].shape[1]} dimensions)")


def image_report(
    images: Path = typer.Argument(..., help="Images .h5ad written by cellkit embed-images."),
    use_rep: str = typer.Option(..., help="obsm key of the embeddings (e.g. X_mae)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for images_iqm.h5ad, cosine_similarity.csv, tsne.csv "
                             "and the figures."),
    control: str = typer.Option(None, help="obs query of the reference images for the IQM (default: all)."),
    by: str = typer.Option(None, help="obs column normalized separately (e.g. plate; default one group)."),
    labels: str = typer.Option("well", help="obs column naming the images in the figures."),
    seed: int = typer.Option(0, help="t-SNE seed."),
):
    """IQM-normalize image embeddings, then their cosine similarities and a t-SNE (sc.tl.tsne), as files and figures."""
    import anndata as ad

    from ..workflows.images import image_report as run

    try:
        paths = run(ad.read_h5ad(images), out, use_rep=use_rep, control=control, by=by, labels=labels, seed=seed)
    except (FileNotFoundError, ValueError, KeyError, OSError) as err:
        fail(str(err).strip("'\""))
    console.print(f"IQM-normalized {use_rep}, cosine similarity and t-SNE written to {out} ({len(paths)} files)")


def register(app: typer.Typer) -> None:
    app.command()(tiles)
    app.command("embed-images")(embed_images)
    app.command("image-report")(image_report)
