"""Segmentation and features on real, user-shaped plates (issue 13): objects, cytoplasm, NaN features, speed.

Datasets (../shared/data/real): CellProfiler ExampleHuman (HT29, 1 field, uint8; DNA = d0, cell
stain = d2), ExampleFly (Kc167, 3 fields, uint8; DNA = D, cells = R, as in CellProfiler's ExampleFly
pipeline: IdentifySecondaryObjects on OrigRed), the BBBC021 DAPI field (nuclei only, uint16) and
the BBBC006 Hoechst fields (nuclei only, 12-bit; w1_z00 far out of focus, w1_z10 nearer).
Every setting is the classical segmenter's default (nothing chosen on these images); with
``--propagation`` the cytoplasm step of an older default can be compared.

Per dataset: objects found, time per field (segmentation; features separately), fraction of cells
whose area is < 1.2 x their nucleus area, fraction with no cytoplasm at all (cell == nucleus),
the same fraction in the dim half (cells whose nucleus-surrounding ring is below the median of
the cell stain, a definition that does not depend on the segmentation), the NaN fraction of the
Cytoplasm features and of all features (`cellkit.features.measure_field`, default groups).
Overlays (PNG): ``--figures DIR``.

Check on data with ground truth (``--synthetic N``, not the reported images): cell AP@0.5 /
AP@0.75 of both cytoplasm methods (``propagation`` = local, the default, and global, the old
one) on N synthetic BBBC021-like fields (`cellkit.datasets`, seed 11), against their true cells.

Usage: OMP_NUM_THREADS=1 python benchmarks/own_plates.py [--figures DIR] [--only human,fly]
-> benchmarks/results/own_plates.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

from cellkit.features import measure_field  # noqa: E402
from cellkit.io.images import read_image, to_uint16  # noqa: E402
from cellkit.segment import ClassicalParams, get_segmenter  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def datasets() -> dict[str, list[tuple[str, dict[str, Path]]]]:
    """name -> [(field name, {channel: path})]; channel 'DNA' is the nuclei, 'Cells' the cell stain."""
    cp = REAL / "cellprofiler_examples"
    human = cp / "ExampleHuman"
    fly = cp / "ExampleFly"
    out = {
        "ExampleHuman": [("D03f00", {"DNA": human / "AS_09125_050116030001_D03f00d0.tif",
                                     "Cells": human / "AS_09125_050116030001_D03f00d2.tif"})],
        "ExampleFly": [(pos, {"DNA": fly / f"01_{pos}_D.TIF", "Cells": fly / f"01_{pos}_R.TIF"})
                       for pos in ("POS002", "POS076", "POS218")],
        "BBBC021_DAPI": [(p.stem[:22], {"DNA": p}) for p in sorted((REAL / "bbbc021_images").glob("*.tif"))],
        "BBBC006_w1_z10": [(p.stem, {"DNA": p}) for p in sorted((REAL / "bbbc006" / "w1_z10").glob("*.png"))],
        "BBBC006_w1_z00": [(p.stem[:40], {"DNA": p}) for p in sorted((REAL / "bbbc006" / "w1_z00").glob("*.tif"))],
    }
    return out


def ring_intensity(nuclei: np.ndarray, stain: np.ndarray, width: int = 5) -> np.ndarray:
    """Mean stain in a ``width``-px ring around each nucleus (labels 1..N), independent of the cells."""
    from skimage.segmentation import expand_labels

    ring = expand_labels(nuclei, width)
    ring[nuclei > 0] = 0
    ids = np.arange(1, int(nuclei.max()) + 1)
    return np.asarray(ndi.mean(stain.astype(float), ring, ids))


def overlay(path: Path, image: np.ndarray, nuclei: np.ndarray, cells: np.ndarray, title: str,
            crop: tuple[slice, slice] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    crop = crop or (slice(None), slice(None))
    image, nuclei, cells = image[(slice(None),) + crop], nuclei[crop], cells[crop]
    rgb = np.zeros(image.shape[1:] + (3,))
    for c in range(image.shape[0]):
        lo, hi = np.percentile(image[c], [1, 99.7])
        plane = np.clip((image[c] - lo) / max(hi - lo, 1e-6), 0, 1)
        rgb[..., 2 if c == 0 else 1] = plane
    rgb[find_boundaries(cells, mode="inner")] = (1, 1, 0)
    rgb[find_boundaries(nuclei, mode="inner")] = (1, 0, 1)
    fig, ax = plt.subplots(figsize=(8, 8 * rgb.shape[0] / rgb.shape[1]))
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_dataset(name: str, fields, figures: Path | None, features: bool, params: ClassicalParams) -> dict:
    rows, nan_cyto, nan_all, ratios, no_cyto, dim_no_cyto, feat_seconds = [], [], [], [], [], [], []
    for k, (field, paths) in enumerate(fields):
        channels = list(paths)
        images = np.stack([read_image(str(paths[c])) for c in channels])
        segmenter = get_segmenter("classical", params=params, nuclear_channel="DNA",
                                  cytoplasm_channels=tuple(c for c in channels if c != "DNA")).with_roles(channels)
        start = time.perf_counter()
        result = segmenter.segment_field(images, channels)
        seconds = time.perf_counter() - start
        nuclei, cells = result.nuclei, result.cells
        n = int(cells.max())
        row = {"field": field, "shape": list(images.shape[1:]), "dtype": str(images.dtype), "objects": n,
               "touching_edge": int(len(result.border)), "seconds": round(seconds, 2)}
        if "Cells" in channels and n:
            ids = np.arange(1, n + 1)
            nuc_area = np.bincount(nuclei.ravel(), minlength=n + 1)[1:]
            cell_area = np.bincount(cells.ravel(), minlength=n + 1)[1:]
            ratio = cell_area / np.maximum(nuc_area, 1)
            ring = ring_intensity(nuclei, images[channels.index("Cells")])
            dim = ring < np.median(ring)
            ratios.append(ratio)
            no_cyto.append(cell_area == nuc_area)
            dim_no_cyto.append((ratio < 1.2)[dim])
            row.update(cells_under_1_2x_nucleus=round(float((ratio < 1.2).mean()), 3),
                       dim_half_under_1_2x=round(float((ratio < 1.2)[dim].mean()), 3),
                       no_cytoplasm=round(float((cell_area == nuc_area).mean()), 3),
                       median_cell_to_nucleus_area=round(float(np.median(ratio)), 2))
            del ids
        if features and n:
            start = time.perf_counter()
            counts = np.stack([to_uint16(p)[0] for p in images])
            table = measure_field(counts, nuclei, cells, channels)
            feat_seconds.append(time.perf_counter() - start)
            cyto = [c for c in table.columns if c.startswith("Cytoplasm_")]
            nan_cyto.append(float(table[cyto].isna().to_numpy().mean()) if cyto else float("nan"))
            nan_all.append(float(table.isna().to_numpy().mean()))
            row.update(nan_cytoplasm_features=round(nan_cyto[-1], 3), nan_features=round(nan_all[-1], 3),
                       feature_seconds=round(feat_seconds[-1], 1))
        rows.append(row)
        if figures is not None and k < 3:
            figures.mkdir(parents=True, exist_ok=True)
            title = f"{name} {field}: {n} objects (magenta nuclei, yellow cells)"
            overlay(figures / f"own_plates_{name}_{field}.png", images.astype(float), nuclei, cells, title)
            h, w = nuclei.shape
            crop = (slice(h // 2 - 128, h // 2 + 128), slice(w // 2 - 128, w // 2 + 128))
            overlay(figures / f"own_plates_{name}_{field}_zoom.png", images.astype(float), nuclei, cells,
                    title + ", centre 256 px", crop)
        print(name, row, flush=True)
    summary = {"fields": len(rows), "objects": int(sum(r["objects"] for r in rows)),
               "seconds_per_field": round(float(np.mean([r["seconds"] for r in rows])), 2)}
    if ratios:
        ratio, flat = np.concatenate(ratios), np.concatenate(no_cyto)
        summary.update(cells_under_1_2x_nucleus=round(float((ratio < 1.2).mean()), 3),
                       dim_half_under_1_2x=round(float(np.concatenate(dim_no_cyto).mean()), 3),
                       no_cytoplasm=round(float(flat.mean()), 3))
    if nan_all:
        summary.update(nan_cytoplasm_features=round(float(np.nanmean(nan_cyto)), 3),
                       nan_features=round(float(np.mean(nan_all)), 3),
                       feature_seconds_per_field=round(float(np.mean(feat_seconds)), 1))
    return {"summary": summary, "fields": rows}


def synthetic_check(n_fields: int) -> dict:
    """Cell AP of both propagation methods on synthetic fields with ground truth."""
    from dataclasses import replace

    from cellkit.datasets import SyntheticConfig
    from cellkit.datasets.synthetic import _plate_effects, plate_layout, render_layout_field
    from cellkit.segment.matching import score_images

    config = SyntheticConfig(n_batches=1, plates_per_batch=1, compounds_per_moa=2, n_moas=6, n_concentrations=1,
                             dmso_wells=2, sites=1, height=512, width=640, seed=11)
    layout = plate_layout(config).iloc[:n_fields]
    effects = _plate_effects(config, 0, layout.plate.iloc[0])
    fields = [render_layout_field(config, row._asdict(), effects) for row in layout.itertuples()]
    out = {}
    for method in ("local", "global"):
        params = replace(ClassicalParams(), propagation=method)
        segmenter = get_segmenter("classical", params=params)
        pairs = []
        for images, _, true_cells in fields:
            result = segmenter.segment_field(images, ["DNA", "Tubulin", "Actin"])
            pairs.append((true_cells, result.cells))
        pooled = score_images(pairs)["pooled"]
        out[method] = {k: round(float(v), 3) for k, v in pooled.items() if k.startswith("ap")}
        print("synthetic", method, out[method], flush=True)
    return {"fields": int(len(fields)), "cells_ap": out}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--figures", type=Path, default=None)
    parser.add_argument("--only", default=None, help="Comma-separated dataset names (prefix match).")
    parser.add_argument("--no-features", action="store_true")
    parser.add_argument("--propagation", default=None, help="Cytoplasm method (ClassicalParams.propagation).")
    parser.add_argument("--name", default="own_plates")
    parser.add_argument("--synthetic", type=int, default=0, help="Also score both methods on N synthetic fields.")
    args = parser.parse_args()
    params = ClassicalParams() if args.propagation is None else ClassicalParams(propagation=args.propagation)
    results = {"settings": {"classical": params.to_dict()}, "datasets": {}}
    for name, fields in datasets().items():
        if args.only and not any(name.lower().startswith(p.lower()) for p in args.only.split(",")):
            continue
        if not fields:
            continue
        results["datasets"][name] = run_dataset(name, fields, args.figures, not args.no_features, params)
    if args.synthetic:
        results["synthetic_check"] = synthetic_check(args.synthetic)
    save(args.name, results)


if __name__ == "__main__":
    main()
