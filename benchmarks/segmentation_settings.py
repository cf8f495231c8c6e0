"""Nucleus segmentation settings and speed on one CPU core: AP on the held-out split, s per field.

- ``--validation``: the shipped model (or ``--model``) on the seeded validation split of
  dsb2018_stage1_train_fluo that its training held out (``MODEL.json`` validation_names; never
  trained on), for each mask-recovery setting (``flow_threshold``, ``cellprob_threshold``, diameter
  auto / fixed at the model's training median): pooled AP@0.5, AP@0.75 and seconds per image.
  Settings are chosen here, never on the test images.
- ``--size``: the same held-out images, each resized by ``--scales`` seeded log-uniform factors in
  [0.5, 2] (nucleus diameters about 5-95 px): the error of the size estimate ``diameter="auto"``
  starts from (`classical.foreground_diameter`) and of the diameter it ends at, |log(found / true)|
  (median, 90th percentile, share within 20 %), and the pooled AP@0.5 / AP@0.75 of its masks.
- ``--speed``: seconds per 1024x1280 BBBC021 DAPI field (nuclei only) for the default backend
  (the shipped model, its default settings), its cheapest setting, the classical backend and the
  previous shipped model (``--previous PATH``), in ``--reps`` interleaved rounds (medians), torch on
  one thread; and the size estimate alone.

    OMP_NUM_THREADS=1 python benchmarks/segmentation_settings.py --validation --size --speed \\
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
SETTINGS = {  # name: CellposeSegmenter options (auto_tolerance: cellpose_backend.AUTO_TOLERANCE for the run)
    "auto_ft0.4": {"diameter": "auto", "flow_threshold": 0.4},
    "auto_ft0.4_tol1.1": {"diameter": "auto", "flow_threshold": 0.4, "auto_tolerance": 1.1},
    "auto_ft0": {"diameter": "auto", "flow_threshold": 0.0},
    "auto_ft0.4_cp-1": {"diameter": "auto", "flow_threshold": 0.4, "cellprob_threshold": -1.0},
    "fixed_ft0.4": {"diameter": "model", "flow_threshold": 0.4},
    "auto_ft0.4_tta": {"diameter": "auto", "flow_threshold": 0.4, "augment": True},
}


def timed(step, images) -> tuple[list, float]:
    """``step(images)`` and its seconds per image."""
    start = time.perf_counter()
    out = step(images)
    return out, (time.perf_counter() - start) / max(len(images), 1)


def validation(model: Path, settings: list[str]) -> dict:
    from cellkit.segment import CellposeSegmenter, score_images
    from cellkit.segment import cellpose_backend as cpb
    from cellkit.segment.cellpose_backend import load_cellpose, model_diameter

    _names, images, masks = held_out(model)
    fixed = model_diameter(load_cellpose(str(model), False))
    out = {"n_images": len(images), "model_training_median_diameter": fixed}
    for name in settings:
        opts = dict(SETTINGS[name])
        if opts["diameter"] == "model":
            opts["diameter"] = fixed
        tolerance = opts.pop("auto_tolerance", cpb.AUTO_TOLERANCE)
        default_tolerance, cpb.AUTO_TOLERANCE = cpb.AUTO_TOLERANCE, tolerance
        seg = CellposeSegmenter(model=str(model), cell_model=None, gpu=False, **opts)
        try:
            labels, sec = timed(seg.segment_nuclei, images)
        finally:
            cpb.AUTO_TOLERANCE = default_tolerance
        pooled = score_images(list(zip(masks, labels)))["pooled"]
        out[name] = {"options": {**opts, "auto_tolerance": tolerance}, "ap@0.5": pooled["ap@0.5"], "ap@0.75": pooled["ap@0.75"],
                     "seconds_per_image": sec}
        print(f"validation {name:<18} AP@0.5 {pooled['ap@0.5']:.3f}  AP@0.75 {pooled['ap@0.75']:.3f}  "
              f"{sec:.2f} s/image", flush=True)
    return out


def held_out(model: Path):
    """Names, images and masks of the model's held-out split (never trained on)."""
    from cellkit.segment.train import load_image_mask_pairs

    report = json.loads(Path(str(model) + ".json").read_text())
    held = set(report["validation_names"])
    data = REAL / "dsb2018_stage1_train_fluo"
    names, images, masks = load_image_mask_pairs(data / "images", data / "masks")
    idx = [i for i, n in enumerate(names) if n in held]
    assert len(idx) == len(held) and not held & set(report["train_names"])
    return [names[i] for i in idx], [images[i] for i in idx], [masks[i] for i in idx]


def size_errors(model: Path, n_scales: int, seed: int = 1) -> dict:
    """Errors of auto's size estimate and final diameter on the held-out images at random scales."""
    import cv2
    import numpy as np
    from cellpose.utils import diameters

    from cellkit.segment import score_images
    from cellkit.segment.cellpose_backend import auto_diameter, load_cellpose
    from cellkit.segment.classical import foreground_diameter

    net = load_cellpose(str(model), False)
    rng = np.random.default_rng(seed)
    first, final, pairs = [], [], []
    for _name, image, mask in zip(*held_out(model)):
        for scale in np.exp(rng.uniform(np.log(0.5), np.log(2.0), n_scales)):
            shape = (max(16, round(image.shape[1] * scale)), max(16, round(image.shape[0] * scale)))
            truth = cv2.resize(mask.astype(np.uint16), shape, interpolation=cv2.INTER_NEAREST)
            if truth.max() == 0:
                continue
            im = cv2.resize(np.asarray(image, np.float32), shape, interpolation=cv2.INTER_LINEAR)
            true = max(5.0, float(diameters(truth)[0]))
            found, labels = auto_diameter(net, im)
            first.append(np.log(max(5.0, foreground_diameter(im)) / true))
            final.append(np.log(found / true))
            pairs.append((truth, labels))

    def summary(errors):
        e = np.abs(errors)
        return {"median": float(np.median(e)), "p90": float(np.quantile(e, 0.9)),
                "within_20pct": float(np.mean(e < np.log(1.2))), "mean_log_error": float(np.mean(errors))}

    pooled = score_images(pairs)["pooled"]
    out = {"cases": len(pairs), "scales_per_image": n_scales, "seed": seed, "size_estimate": summary(first),
           "auto_final_diameter": summary(final), "ap@0.5": pooled["ap@0.5"], "ap@0.75": pooled["ap@0.75"]}
    for key in ("size_estimate", "auto_final_diameter"):
        print(f"size {key:<22} |log error| median {out[key]['median']:.3f}  p90 {out[key]['p90']:.3f}  "
              f"within 20 % {out[key]['within_20pct']:.2f}", flush=True)
    print(f"size auto masks: AP@0.5 {out['ap@0.5']:.3f}  AP@0.75 {out['ap@0.75']:.3f} ({len(pairs)} cases)")
    return out


def speed(model: Path, previous: Path | None, n_fields: int, cheap: dict, reps: int) -> dict:
    """Seconds per field of each backend, in ``reps`` interleaved rounds (medians), and of the
    size estimate that ``diameter="auto"`` starts from."""
    import numpy as np
    import tifffile

    from cellkit.segment import CellposeSegmenter, get_segmenter
    from cellkit.segment.classical import foreground_diameter

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
    steps = {name: seg.segment_nuclei for name, seg in runs.items()}
    steps["size estimate alone (foreground_diameter)"] = lambda ims: [foreground_diameter(im) for im in ims]
    seconds, results = {name: [] for name in steps}, {}
    for name, step in steps.items():
        step(fields[:1])  # warm-up (model load, numba compilation)
    for _ in range(reps):
        for name, step in steps.items():
            results[name], sec = timed(step, fields)
            seconds[name].append(sec)
    out = {"n_fields": len(fields), "distinct_fields": len(files), "field_shape": [1024, 1280], "reps": reps}
    for name in steps:
        sec = float(np.median(seconds[name]))
        out[name] = {"seconds_per_field": sec, "all_rounds": seconds[name]}
        if name in runs:
            out[name]["nuclei_per_field"] = [int(lab.max()) for lab in results[name]]
        print(f"speed {name:<55} {sec:.2f} s/field (median of {reps})  "
              + (f"nuclei {out[name]['nuclei_per_field']}" if name in runs else f"diameter {results[name][0]:.1f} px"),
              flush=True)
    return out


def main():
    import torch

    from cellkit.segment.cellpose_backend import shipped_nucleus_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped nucleus model")
    parser.add_argument("--previous", type=Path, help="the previous shipped model, for the speed comparison")
    parser.add_argument("--validation", action="store_true")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--size", action="store_true")
    parser.add_argument("--scales", type=int, default=3, help="random scales per held-out image (--size)")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds of the speed comparison")
    parser.add_argument("--cheap", default='{"flow_threshold": 0.0}', help="JSON options of the cheap setting")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = args.model or shipped_nucleus_model()
    result = {"model": str(model), "torch_threads": 1}
    if args.validation:
        result["validation"] = validation(model, args.settings.split(","))
    if args.size:
        result["size"] = size_errors(model, args.scales)
    if args.speed:
        result["speed"] = speed(model, args.previous, args.fields, json.loads(args.cheap), args.reps)
    save("segmentation_settings", result)


if __name__ == "__main__":
    main()
