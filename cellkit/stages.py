"""The pipeline stages: thin adapters from pipeline options to library functions.

Each stage reads the outputs of the stages before it from fixed paths in the output folder.
"""

from __future__ import annotations

from pathlib import Path

from .pipeline import Context, register_stage


@register_stage("input", outputs=["index.parquet"])
def input_stage(ctx: Context, kind: str, **options) -> None:
    """Write ``index.parquet``: from a synthetic plate set (written to ``plate/``), BBBC021, or an index file."""
    from . import io
    from .datasets import SyntheticConfig, synthetic_index, write_synthetic_plate

    if kind == "synthetic":
        plate = ctx.out / "plate"
        if not (plate / "synthetic.json").exists():
            write_synthetic_plate(plate, SyntheticConfig(**options), n_jobs=ctx.workers or 2)
        index = synthetic_index(plate)
    elif kind == "bbbc021":
        root = Path(options["root"])
        index = io.from_bbbc021(options.get("image_csv", root / "BBBC021_v1_image.csv"),
                                options.get("moa_csv", root / "BBBC021_v1_moa.csv"), root, check_files=False)
        if options.get("plates"):
            index = index[index.plate.isin(options["plates"])].reset_index(drop=True)
            missing = set(options["plates"]) - set(index.plate)
            if missing:
                raise ValueError(f"plates not in BBBC021: {sorted(missing)}")
        io.validate_index(index, root=root)
    else:
        index = io.read_index(options["path"], check_files=True)
    io.write_index(index, ctx.out / "index.parquet")
    ctx.log(f"input: {len(index)} fields, {index.plate.nunique()} plates")
