"""The demo: every stage of cellkit on a generated synthetic plate set.

`run_demo` runs the stages in order and returns a dict of output name -> path.
Each stage is skipped when its output already exists, so a rerun finishes an interrupted demo.
"""

from __future__ import annotations

from pathlib import Path

from .datasets import SyntheticConfig, synthetic_index, write_synthetic_plate
from .io import write_index

DEMO_CONFIG = SyntheticConfig()


def run_demo(out, config: SyntheticConfig = DEMO_CONFIG, *, log=print, progress=None) -> dict[str, Path]:
    """Run every stage on a synthetic plate set under ``out``.

    Outputs: ``plate/`` (images in BBBC021 layout, ground truth), ``index.parquet``,
    ``labels.zarr`` (classical segmentation; its QC table ``labels.qc.csv`` beside it).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outputs = {"plate": out / "plate", "index": out / "index.parquet"}
    if not (outputs["plate"] / "synthetic.json").exists():
        log(f"synth: writing a synthetic plate set to {outputs['plate']}")
        write_synthetic_plate(outputs["plate"], config, progress=progress)
    index = synthetic_index(outputs["plate"])
    write_index(index, outputs["index"])
    log(f"index: {len(index)} fields, {index.plate.nunique()} plates -> {outputs['index']}")
    outputs["labels"] = _segment(index, out / "labels.zarr", log=log, progress=progress)
    return outputs


def _segment(index, labels, *, log, progress) -> Path:
    """Classical segmentation of every field (fast); a rerun only does the missing fields."""
    from .segment import get_segmenter, qc_path, segment_plate

    qc = segment_plate(index, labels, get_segmenter("classical"), progress=progress)
    failed = qc[qc.status != "ok"]
    if len(failed):
        raise RuntimeError(f"segmentation failed for {len(failed)} fields, see {qc_path(labels)}")
    log(f"segment: {int(qc.n_cells.sum())} cells in {len(qc)} fields -> {labels}")
    return labels
