"""The pipeline stages: thin adapters from pipeline options to library functions, and their registry
(`register_stage`, `STAGES`; `cellkit.workflows.pipeline` runs them).

Each stage reads the outputs of the stages before it from fixed paths in the output folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .._logging import get_logger

logger = get_logger(__name__)


@dataclass
class Context:
    """What a stage sees: the output folder, the dask scheduler address or worker count, and a progress
    setting. Stages log to ``logging.getLogger("cellkit")`` (the pipeline copies it to ``pipeline.log``)."""

    out: Path
    scheduler: str | None = None
    workers: int | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    progress: object = None  # progress bars of long stages: None, True/"tqdm", "rich" (cellkit._progress)


@dataclass
class Stage:
    """A pipeline stage: ``run(ctx, **options)`` writes ``outputs`` (paths relative to the output folder)."""

    name: str
    run: Callable
    outputs: list[str]


STAGES: dict[str, Stage] = {}


def register_stage(name: str, outputs: list[str]):
    """Decorator: register ``fn(ctx, **options)`` as pipeline stage ``name``."""
    def wrap(fn):
        STAGES[name] = Stage(name, fn, outputs)
        return fn
    return wrap


@register_stage("input", outputs=["index.parquet"])
def input_stage(ctx: Context, kind: str, **options) -> None:
    """Write ``index.parquet``: from a synthetic plate set (written to ``plate/``), BBBC021, an OME-Zarr
    HCS plate (``omezarr: {path: ...}``, fields read from the plate), or an index file."""
    from .. import io
    from ..datasets import SyntheticConfig, synthetic_index, write_synthetic_plate

    if kind == "synthetic":
        plate = ctx.out / "plate"
        if not (plate / "synthetic.json").exists():
            write_synthetic_plate(plate, SyntheticConfig(**options), workers=ctx.workers or 2)
        index = synthetic_index(plate)
    elif kind == "bbbc021":
        root = Path(options["root"])
        index = io.from_bbbc021(options.get("image_csv", root / "BBBC021_v1_image.csv"),
                                options.get("moa_csv", root / "BBBC021_v1_moa.csv"), root, check_files=False)
        if options.get("plates"):
            index = index[index.plate.isin(options["plates"])].reset_index(drop=True)
            missing = set(options["plates"]) - set(index.plate)
            if missing:
                from ..errors import CellkitError

                raise CellkitError(f"input.bbbc021.plates: not in BBBC021: {sorted(missing)}",
                                   "check the plate names (e.g. Week1_22123)")
        io.validate_index(index, root=root)
    elif kind == "omezarr":  # an OME-Zarr HCS plate (or a folder of them), read in place
        index = io.from_omezarr(options["path"])
    else:
        index = io.read_index(options["path"], check_files=True)
    io.write_index(index, ctx.out / "index.parquet")
    logger.info(f"input: {len(index)} fields, {index.plate.nunique()} plates")


def current_index(ctx: Context) -> Path:
    """The plate index the next stage works on: the last one written (input, qc with ``exclude``,
    illumination), i.e. ``ctx.outputs["index"]``, else ``index.parquet``."""
    return ctx.outputs.get("index", ctx.out / "index.parquet")


@register_stage("qc", outputs=["qc", "qc/index.parquet"])
def qc_stage(ctx: Context, exclude: bool = False, saturation: float | None = None, blur_z: float = 3.0,
             saturated: float = 1e-3, empty: float = 1e-3) -> None:
    """Image QC of every field (``qc/qc.csv``, ``qc/qc_fields.csv``, ``qc/qc_plate_map.png``, `cellkit.qc`);
    ``qc/index.parquet`` holds the fields that go on: all, or with ``exclude`` those that pass."""
    import json

    from ..io import read_index, write_index
    from ..qc import field_table, qc_plate
    from .qc import write_qc

    index = read_index(current_index(ctx))
    table = qc_plate(index, saturation=saturation, workers=ctx.workers or 2, blur_z=blur_z, saturated=saturated,
                     empty=empty)
    write_qc(table, ctx.out / "qc")
    fields = field_table(table)
    failed = set(fields.loc[~fields.qc_pass, "field_id"])
    kept = index[~index.field_id.isin(failed)] if exclude else index
    counts = {"fields": len(index), "flagged": len(failed), "excluded": len(index) - len(kept),
              **{f: int(fields[f].sum()) for f in ("blurry", "saturated", "empty")}}
    (ctx.out / "qc" / "counts.json").write_text(json.dumps(counts, indent=2))
    write_index(kept.reset_index(drop=True), ctx.out / "qc" / "index.parquet")
    logger.info(f"qc: {counts['flagged']} of {counts['fields']} fields flagged ({counts['blurry']} blurry, "
            f"{counts['saturated']} saturated, {counts['empty']} empty), {counts['excluded']} excluded")


@register_stage("illumination", outputs=["illumination", "illumination/index.parquet"])
def illumination_stage(ctx: Context, aggregate: str = "median", smoothing: str = "median",
                       size: float | None = None) -> None:
    """Flat field per plate and channel (``illumination/<plate>.tif`` + ``illumination.png``,
    `cellkit.illumination`), the corrected fields (``illumination/corrected/``) and their index
    (``illumination/index.parquet``), which the later stages read."""
    from ..illumination import correct_index, estimate_illumination, save_illumination
    from ..io import channels_of, read_index, write_index

    index = read_index(current_index(ctx))
    fields = estimate_illumination(index, aggregate=aggregate, smoothing=smoothing, size=size,
                                   workers=ctx.workers or 2)
    folder = ctx.out / "illumination"
    save_illumination(fields, channels_of(index), folder,
                      attrs={"aggregate": aggregate, "smoothing": smoothing, "size": size})
    corrected = correct_index(index, fields, folder / "corrected", workers=ctx.workers or 2)
    write_index(corrected, folder / "index.parquet")
    logger.info(f"illumination: {len(fields)} plates corrected, {len(corrected)} fields")


@register_stage("segment", outputs=["labels.zarr", "labels.qc.csv"])
def segment_stage(ctx: Context, backend: str = "auto", model: str | None = None, cell_model: str | None = "cyto3",
                  diameter: float | None = None, nuclei_channel: str | None = None,
                  cell_channels: list[str] | str | None = None, cell_expand: int = 0) -> None:
    """``index.parquet`` -> ``labels.zarr`` (+ QC table). Fails when any field failed.

    Channel roles as in ``cellkit segment``: ``nuclei_channel``, ``cell_channels`` (a list, or
    ``none``/``[]`` for none), ``cell_expand`` px (see `cellkit.segment.Segmenter`)."""
    from ..io import read_index
    from ..segment import get_segmenter, qc_path, segment_plate

    labels = ctx.out / "labels.zarr"
    if isinstance(cell_channels, str):
        cell_channels = [] if cell_channels.lower() == "none" else [c.strip() for c in cell_channels.split(",")]
    roles = {"nuclear_channel": nuclei_channel, "cell_expand": int(cell_expand),
             "cytoplasm_channels": None if cell_channels is None else tuple(cell_channels)}
    segmenter = get_segmenter(backend, model=model, cell_model=cell_model, diameter=diameter, **roles)
    qc = segment_plate(read_index(current_index(ctx)), labels, segmenter,
                       workers=ctx.workers or 1, scheduler=ctx.scheduler, progress=ctx.progress)
    failed = qc[qc.status != "ok"]
    if len(failed):
        from ..errors import CellkitError

        first = failed.iloc[0]
        raise CellkitError(f"segmentation failed for {len(failed)} of {len(qc)} fields (e.g. {first.field_id}: "
                           f"{first.error}); see {qc_path(labels)}",
                           "fix or remove those images, then run the pipeline again (finished fields are kept)")
    logger.info(f"segment: {int(qc.n_cells.sum())} cells in {len(qc)} fields")


@register_stage("extract", outputs=["cells.zarr", "cells.h5ad"])
def extract_stage(ctx: Context, size: int = 64, border: str = "inside", mask_neighbors: bool = False,
                  features: bool = True) -> None:
    """``index.parquet`` + ``labels.zarr`` -> ``cells.zarr`` and ``cells.h5ad`` (morphology in X)."""
    from ..extract import extract_cells
    from ..features import measure_field

    extract_cells(current_index(ctx), ctx.out / "labels.zarr", ctx.out / "cells.zarr", size=size,
                  border=border, mask_neighbors=mask_neighbors, measure=measure_field if features else None,
                  adata=ctx.out / "cells.h5ad", workers=ctx.workers or 2, scheduler=ctx.scheduler,
                  progress=ctx.progress)


@register_stage("profile", outputs=["profiles"])
def profile_stage(ctx: Context, max_cluster_cells: int = 5000, seed: int = 0) -> None:
    """``cells.h5ad`` -> ``profiles/``: wells, treatments, MOA scores, clusters, figures."""
    from .profiles import demo_profiles

    # an interrupted run is finished by the pipeline running this stage again (it overwrites)
    demo_profiles(ctx.out / "cells.h5ad", ctx.out / "profiles", cells_zarr=ctx.out / "cells.zarr",
                  max_cluster_cells=max_cluster_cells, seed=seed)


@register_stage("embed", outputs=["models"])
def embed_stage(ctx: Context, methods: tuple = ("simclr", "pixel_pca"), config: dict | None = None) -> None:
    """``cells.zarr`` -> ``models/<method>`` (trained encoders) and their ``obsm`` key in ``cells.h5ad``
    (`ck.models.EMBEDDING_KEYS`: ``X_simclr``, ``X_pixel_pca``, ...).

    An interrupted training resumes from its last finished epoch.
    """
    from ..models import EMBEDDING_KEYS, IncompleteModelError, embed_h5ad, load_model, train
    from ..models.checkpoint import CHECKPOINT

    cells = ctx.out / "cells.zarr"
    for method in methods:
        model_dir = ctx.out / "models" / method
        try:
            load_model(model_dir)
        except (FileNotFoundError, IncompleteModelError):
            logger.info(f"embed: training {method}")
            resume = (model_dir / CHECKPOINT).exists()  # an earlier run finished at least one epoch
            train(cells, model_dir, method=method, config=config, resume=resume, overwrite=not resume)
        embed_h5ad(cells, model_dir, ctx.out / "cells.h5ad")
        logger.info(f"embed: obsm['{EMBEDDING_KEYS[method]}'] -> cells.h5ad")
