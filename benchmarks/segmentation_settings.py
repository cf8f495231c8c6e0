"""Nucleus segmentation settings and speed on one CPU core: AP on the held-out split, s per field.

- ``--validation``: the shipped model (or ``--model``) on the seeded validation split of
  dsb2018_stage1_train_fluo that its training held out (``MODEL.json`` validation_names; never
  trained on), for each mask-recovery setting (``flow_threshold``, ``cellprob_threshold``, diameter
  auto / fixed at the model's training median): pooled AP@0.5, AP@0.75 and seconds per image.
  Settings are chosen here, never on the test images.
- ``--speed``: seconds per 1024x1280 BBBC021 DAPI field (nuclei only) for the default backend
  (the shipped model, its default settings), its cheapest setting, the classical backend and the
  previous shipped model (``--previous PATH``), all in one run, torch on one thread.

    OMP_NUM_THREADS=1 python benchmarks/segmentation_settings.py --validation --speed \\
        --previous /tmp/dsb2018_nuclei_cellkit.cp

Writes benchmarks/results/segmentation_settings.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import save

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
SETTINGS = {  # name: CellposeSegmenter options
    "auto_ft0.4": {"diameter": "auto", "flow_threshold": 0.4},
    "auto_ft0": {"diameter": "auto", "flow_threshold": 0.0},
    "auto_ft0.4_cp-1": {"diameter": "auto", "flow_threshold": 0.4, "cellprob_threshold": -1.0},
    "fixed_ft0.4": {"diameter": "model", "flow_threshold": 0.4},
}


def timed_segment(segmenter, images) -> tuple[list, float]:
    start = time.perf_counter()
    labels = segmenter.segment_nuclei(images)
    return labels, (time.perf_counter() - start) / max(len(images), 1)


def validation(model: Path, settings: list[str]) -> dict:
    from cellkit.segment import CellposeSegmenter, score_images
    from cellkit.segment.cellpose_backend import load_cellpose, model_diameter
    from cellkit.segment.train import load_image_mask_pairs

    report = json.loads(Path(str(model) + ".json").read_text())
    held = set(report["validation_names"])
    data = REAL / "dsb2018_stage1_train_fluo"
    names, images, masks = load_image_mask_pairs(data / "images", data / "masks")
    idx = [i for i, n in enumerate(names) if n in held]
    assert len(idx) == len(held) and not held & set(report["train_names"])
    fixed = model_diameter(load_cellpose(str(model), False))
    out = {"n_images": len(idx), "model_training_median_diameter": fixed}
    for name in settings:
        opts = dict(SETTINGS[name])
        if opts["diameter"] == "model":
            opts["diameter"] = fixed
        seg = CellposeSegmenter(model=str(model), cell_model=None, gpu=False, **opts)
        labels, sec = timed_segment(seg, [images[i] for i in idx])
        pooled = score_images([(masks[i], lab) for i, lab in zip(idx, labels)])["pooled"]
        out[name] = {"options": opts, "ap@0.5": pooled["ap@0.5"], "ap@0.75": pooled["ap@0.75"],
                     "seconds_per_image": sec}
        print(f"validation {name:<18} AP@0.5 {pooled['ap@0.5']:.3f}  AP@0.75 {pooled['ap@0.75']:.3f}  "
              f"{sec:.2f} s/image", flush=True)
    return out


def speed(model: Path, previous: Path | None, n_fields: int, cheap: dict) -> dict:
    import tifffile

    from cellkit.segment import CellposeSegmenter, get_segmenter

    files = sorted((REAL / "bbbc021_images").rglob("*_w1*.tif"))  # w1: the DAPI channel
    fields = [f for f in (tifffile.imread(p) for p in files) if f.shape == (1024, 1280)]
    if not fields:
        raise SystemExit(f"no 1024x1280 DAPI field in {REAL / 'bbbc021_images'}")
    fields = (fields * n_fields)[:n_fields]  # the folder may hold a single field: timed n_fields times
    runs = {"default (shipped model, auto diameter)": CellposeSegmenter(model=str(model), cell_model=None, gpu=False),
            f"shipped model, {cheap}": CellposeSegmenter(model=str(model), cell_model=None, gpu=False, **cheap),
            "classical": get_segmenter("classical")}
    if previous:
        runs["previous shipped model (dsb2018_nuclei_cellkit.cp, auto)"] = CellposeSegmenter(
            model=str(previous), cell_model=None, gpu=False, diameter="auto")
    out = {"n_fields": len(fields), "distinct_fields": len(files), "field_shape": [1024, 1280]}
    for name, seg in runs.items():
        seg.segment_nuclei(fields[:1])  # warm-up (model load, numba compilation)
        labels, sec = timed_segment(seg, fields)
        out[name] = {"seconds_per_field": sec, "nuclei_per_field": [int(lab.max()) for lab in labels]}
        print(f"speed {name:<55} {sec:.2f} s/field  nuclei {[int(lab.max()) for lab in labels]}", flush=True)
    return out


def main():
    import torch

    from cellkit.segment.cellpose_backend import shipped_nucleus_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped nucleus model")
    parser.add_argument("--previous", type=Path, help="the previous shipped model, for the speed comparison")
    parser.add_argument("--validation", action="store_true")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument("--cheap", default='{"flow_threshold": 0.0}', help="JSON options of the cheap setting")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = args.model or shipped_nucleus_model()
    result = {"model": str(model), "torch_threads": 1}
    if args.validation:
        result["validation"] = validation(model, args.settings.split(","))
    if args.speed:
        result["speed"] = speed(model, args.previous, args.fields, json.loads(args.cheap))
    save("segmentation_settings", result)


if __name__ == "__main__":
    main()
