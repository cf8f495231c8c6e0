"""Nucleus segmentation accuracy on real images: DSB2018 (BBBC038) fluorescence split.

- classical backend (default Otsu threshold, and ``threshold_method="li"``): all 20 images of ../shared/data/real/dsb2018_stage1_test_fluo (no training;
  note that its default parameters were chosen while looking at these images), and the StarDist
  test image (img2d/mask2d, also from DSB2018) as an independent check.
- Cellpose trained by cellkit from scratch (no pretrained weights offline): trained on a seeded
  75 % of the 20 images, scored only on the held-out 25 % and on the StarDist image, never on
  training images. With ``--model`` an existing model is scored instead; its ``MODEL.json`` must
  list its training images, and any overlap with the test images is refused.

    nice -n 10 python benchmarks/segmentation_dsb2018.py [--epochs 30 --patch-size 112] [--model M]

Writes benchmarks/results/segmentation_dsb2018.json. AP(t) = TP / (TP + FP + FN), IoU > t.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
RESULTS = Path(__file__).parent / "results"
TARGET = 0.86
BACKENDS = ("classical", "classical_li", "cellpose_trained")


def score(segmenter, images, masks, names) -> dict:
    from cellkit.segment import score_images

    start = time.perf_counter()
    predictions = segmenter.segment_nuclei(images)
    seconds = time.perf_counter() - start
    result = score_images(list(zip(masks, predictions)), names=names)
    result["seconds_per_image"] = seconds / max(len(images), 1)
    return result


def main():
    import torch

    from cellkit.segment import ClassicalParams, get_segmenter
    from cellkit.segment.train import load_image_mask_pairs, train_segmenter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REAL / "dsb2018_stage1_test_fluo")
    parser.add_argument("--stardist", type=Path, default=REAL / "stardist_test_nuclei")
    parser.add_argument("--epochs", type=int, default=0, help="train a Cellpose model for this many epochs")
    parser.add_argument("--patch-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=0.005)
    parser.add_argument("--model", type=Path, help="score this cellkit-trained model instead of training")
    parser.add_argument("--diameter", default="auto", help="Cellpose diameter: px, 'auto' or 'model'")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    names, images, masks = load_image_mask_pairs(args.data / "images", args.data / "masks")
    import tifffile

    sd_image = tifffile.imread(args.stardist / "img2d.tif")
    sd_mask = tifffile.imread(args.stardist / "mask2d.tif")
    result = {"data": str(args.data), "n_images": len(names), "target_pooled_ap@0.5": TARGET}

    classical = get_segmenter("classical")
    li = get_segmenter("classical", params=ClassicalParams(threshold_method="li"))
    result["classical"] = {"all_20": score(classical, images, masks, names),
                           "stardist_img2d": score(classical, [sd_image], [sd_mask], ["img2d"])}
    result["classical_li"] = {"all_20": score(li, images, masks, names),
                              "stardist_img2d": score(li, [sd_image], [sd_mask], ["img2d"])}

    model, report = args.model, None
    with tempfile.TemporaryDirectory() as tmp:
        if model is None and args.epochs > 0:
            model = Path(tmp) / "dsb_nuclei.cp"
            report = train_segmenter(args.data / "images", args.data / "masks", model, epochs=args.epochs,
                                     batch_size=args.batch_size, learning_rate=args.learning_rate,
                                     patch_size=args.patch_size, validation_fraction=0.25, seed=args.seed,
                                     gpu=False, diameter=None if args.diameter == "model" else args.diameter)
            keep = RESULTS / "dsb_nuclei.cp"
            RESULTS.mkdir(exist_ok=True)
            keep.write_bytes(model.read_bytes())
            (RESULTS / "dsb_nuclei.cp.json").write_text(json.dumps(report, indent=2))
            model = keep
        elif model is not None:
            report = json.loads(Path(str(model) + ".json").read_text())
        if model is not None:
            held_out = [n for n in names if n not in set(report["train_names"])]
            if not held_out:
                raise SystemExit("the model was trained on every image here: no honest held-out evaluation")
            idx = [names.index(n) for n in held_out]
            diameter = None if args.diameter == "model" else (args.diameter if args.diameter == "auto"
                                                               else float(args.diameter))
            cp = get_segmenter("cellpose", model=str(model), cell_model=None, diameter=diameter, gpu=False)
            result["cellpose_trained"] = {
                "model": str(model), "epochs": report["epochs"], "patch_size": report.get("patch_size"),
                "train_seconds": report.get("seconds"), "train_names": report["train_names"],
                "held_out": score(cp, [images[i] for i in idx], [masks[i] for i in idx], held_out),
                "stardist_img2d": score(cp, [sd_image], [sd_mask], ["img2d"])}
            result["classical"]["same_held_out"] = score(classical, [images[i] for i in idx],
                                                         [masks[i] for i in idx], held_out)

    lines = []
    for backend in BACKENDS:
        for split, r in result.get(backend, {}).items():
            if isinstance(r, dict) and "pooled" in r:
                p = r["pooled"]
                lines.append(f"{backend:<17} {split:<15} {p['n_images']:>2} images: pooled AP@0.5 {p['ap@0.5']:.3f} "
                             f"AP@0.75 {p['ap@0.75']:.3f} (TP {p['tp@0.5']}, FP {p['fp@0.5']}, FN {p['fn@0.5']}), "
                             f"{r['seconds_per_image']:.2f} s/image")
    best = max((r["pooled"]["ap@0.5"], f"{b}/{s}") for b in BACKENDS
               for s, r in result.get(b, {}).items() if isinstance(r, dict) and "pooled" in r and s != "stardist_img2d")
    result["best"] = {"ap@0.5": best[0], "run": best[1], "target": TARGET, "met": best[0] >= TARGET}
    print("\n".join(lines))
    print(json.dumps(result["best"]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "segmentation_dsb2018.json").write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
