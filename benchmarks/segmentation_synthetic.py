"""Segmentation accuracy against synthetic ground truth, throughput and peak memory.

Renders BBBC021-sized (1024x1280) synthetic fields with ground truth (several phenotypes, plate
illumination and gains), segments them with each backend and reports pooled AP@0.5 / AP@0.75 for
nuclei and cells, fields per second and peak resident memory (each backend measured in a fresh
process). Cellpose pretrained weights are not available offline: with ``--model`` (a
cellkit-trained nucleus model) Cellpose is run end to end (cells from the classical propagation
unless ``--cell-model`` is given); without it only the network passes of an untrained CPnet of
Cellpose's size are timed (nucleus pass + 2-channel cell pass, no mask computation: an untrained
network's flows make the mask step meaningless and slow).

    nice -n 10 python benchmarks/segmentation_synthetic.py [--fields 6] [--model MODEL]

It also times the classical backend against a plain scikit-image threshold + watershed
(`plain_skimage`, the speed floor) on the same fields, interleaved field by field, in one process, in wall and CPU
time (the target of issue 21 is <= 1.5x; docs/segmentation.md has the figures).

Writes benchmarks/results/segmentation_synthetic.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
CHANNELS = ["DNA", "Tubulin", "Actin"]
TARGETS = {"nuclei_ap@0.5": 0.95, "cells_ap@0.5": 0.90}


def synthetic_fields(n: int, shape=(1024, 1280), seed: int = 0):
    """n fields (images, nuclei, cells) of varied phenotypes with uneven illumination and gains."""
    from cellkit.datasets import render_field
    from cellkit.datasets.phenotypes import MOAS, phenotype
    from cellkit.datasets.render import illumination_field

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        effect = None if k % 3 == 0 else MOAS[k % len(MOAS)]
        params = phenotype(_effect(effect), fraction=1.0) if effect else phenotype()
        illumination = np.stack([illumination_field(shape, rng, strength=rng.uniform(0.2, 0.4)) for _ in range(3)])
        gains = np.exp(rng.normal(0, 0.15, 3))
        out.append(render_field(params, shape, rng=rng, gains=gains, illumination=illumination))
    return out


def _effect(moa):
    from cellkit.datasets.phenotypes import MOA_EFFECTS

    return MOA_EFFECTS[moa]


def measure(backend: str, n_fields: int, model: str | None, cell_model: str | None, seed: int) -> dict:
    """Segment the fields with one backend in this process: accuracy, seconds per field, peak RSS."""
    import resource

    import torch

    from cellkit.segment import get_segmenter, score_images

    torch.set_num_threads(2)
    fields = synthetic_fields(n_fields, seed=seed)
    segmenter = get_segmenter(backend, model=model, cell_model=cell_model, gpu=False)
    segmenter.segment_field(fields[0][0][:, :256, :256], CHANNELS)  # warm-up (model load)
    start = time.perf_counter()
    results = [segmenter.segment_field(images, CHANNELS) for images, _, _ in fields]
    seconds = time.perf_counter() - start
    nuclei = score_images([(f[1], r.nuclei) for f, r in zip(fields, results)])["pooled"]
    cells = score_images([(f[2], r.cells) for f, r in zip(fields, results)])["pooled"]
    return {"backend": backend, "model": model, "cell_model": cell_model, "n_fields": n_fields,
            "field_shape": list(fields[0][0].shape), "seconds_per_field": seconds / n_fields,
            "fields_per_second": n_fields / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "nuclei": nuclei, "cells": cells, "n_true_cells": int(sum(f[2].max() for f in fields))}


def plain_skimage(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The speed floor: a plain scikit-image threshold + watershed on a (3, H, W) DNA/Tubulin/Actin field.

    Nuclei: Gaussian (sigma 1), Otsu, distance transform, maxima >= 5 px apart, watershed; cells:
    watershed of the Sobel gradient of the smoothed mean cytoplasm from the nuclei, inside its Otsu
    foreground. No background correction, per-object thresholds or empty-field checks: the least
    a threshold + watershed segmenter does (fixed textbook settings, not tuned).
    """
    from scipy import ndimage as ndi
    from skimage import filters, measure, segmentation
    from skimage.feature import peak_local_max

    dna = ndi.gaussian_filter(images[0].astype(np.float32), 1.0)
    mask = dna > filters.threshold_otsu(dna)
    distance = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=5, labels=measure.label(mask), exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    nuclei = segmentation.watershed(-distance, markers, mask=mask)
    cyto = ndi.gaussian_filter(images[1:].astype(np.float32).mean(axis=0), 1.0)
    foreground = (cyto > filters.threshold_otsu(cyto)) | (nuclei > 0)
    cells = segmentation.watershed(filters.sobel(cyto), nuclei, mask=foreground)
    return nuclei.astype(np.uint32), cells.astype(np.uint32)


def measure_floor(n_fields: int, seed: int, rounds: int = 3) -> dict:
    """Classical backend vs `plain_skimage` on the same fields in this process, ``rounds`` times,
    interleaved field by field (alternating which runs first): wall and CPU seconds per field
    (median round) of each, their ratios, and both accuracies."""
    from cellkit.segment import get_segmenter, score_images

    fields = synthetic_fields(n_fields, seed=seed)
    segmenter = get_segmenter("classical")
    segmenter.segment_field(fields[0][0][:, :256, :256], CHANNELS)  # warm-up
    plain_skimage(fields[0][0][:, :256, :256])
    seconds = {"classical": [], "skimage_floor": []}
    cpu = {"classical": [], "skimage_floor": []}  # process CPU time (all threads), less sensitive to load
    runs = {"classical": lambda images: segmenter.segment_field(images, CHANNELS), "skimage_floor": plain_skimage}
    for r in range(rounds):
        # interleaved field by field, the order alternating, so both see the same machine load
        wall, used, out = dict.fromkeys(runs, 0.0), dict.fromkeys(runs, 0.0), {k: [] for k in runs}
        for i, (images, _, _) in enumerate(fields):
            for name in (list(runs) if (r + i) % 2 == 0 else list(runs)[::-1]):
                start, start_cpu = time.perf_counter(), time.process_time()
                out[name].append(runs[name](images))
                wall[name] += time.perf_counter() - start
                used[name] += time.process_time() - start_cpu
        for name in runs:
            seconds[name].append(wall[name] / n_fields)
            cpu[name].append(used[name] / n_fields)
        ours, floor = out["classical"], out["skimage_floor"]
    median = {k: float(np.median(v)) for k, v in seconds.items()}
    median_cpu = {k: float(np.median(v)) for k, v in cpu.items()}
    score = (lambda pairs: score_images(pairs)["pooled"]["ap@0.5"])
    return {"n_fields": n_fields, "rounds": rounds, "seconds_per_field": median, "seconds_per_field_rounds": seconds,
            "ratio": median["classical"] / median["skimage_floor"], "target_ratio": 1.5,
            "cpu_seconds_per_field": median_cpu, "cpu_seconds_per_field_rounds": cpu,
            "cpu_ratio": median_cpu["classical"] / median_cpu["skimage_floor"],
            "ap@0.5": {"classical": {"nuclei": score([(f[1], r.nuclei) for f, r in zip(fields, ours)]),
                                     "cells": score([(f[2], r.cells) for f, r in zip(fields, ours)])},
                       "skimage_floor": {"nuclei": score([(f[1], r[0]) for f, r in zip(fields, floor)]),
                                         "cells": score([(f[2], r[1]) for f, r in zip(fields, floor)])}}}


def untrained_model(path: Path, nchan: int = 2) -> str:
    """A randomly initialised Cellpose 3 CPnet saved as a weight file (timing only)."""
    import torch
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    CPnet([nchan, 32, 64, 128, 256], 3, sz=3, diam_mean=17.0).save_model(str(path))
    return str(path)


def measure_network(n_fields: int, seed: int) -> dict:
    """Seconds per field of the Cellpose network passes alone (untrained weights), and peak RSS."""
    import resource

    import torch
    from cellpose import models

    torch.set_num_threads(2)
    fields = synthetic_fields(n_fields, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        nuc = models.CellposeModel(gpu=False, pretrained_model=untrained_model(Path(tmp) / "n.cp"), diam_mean=17.0)
        cyto = models.CellposeModel(gpu=False, pretrained_model=untrained_model(Path(tmp) / "c.cp"), diam_mean=30.0)
    start = time.perf_counter()
    for images, _, _ in fields:
        nuc.eval(images[0].astype(np.float32), channels=[0, 0], diameter=17.0, compute_masks=False)
        cyto.eval(images[[2, 0]].astype(np.float32), channels=[1, 2], channel_axis=0, diameter=30.0,
                  compute_masks=False)
    seconds = time.perf_counter() - start
    return {"backend": "cellpose (network passes only, untrained weights)", "n_fields": n_fields,
            "field_shape": list(fields[0][0].shape), "seconds_per_field": seconds / n_fields,
            "fields_per_second": n_fields / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _in_subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--_measure", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fields", type=int, default=6, help="1024x1280 fields for the classical backend")
    parser.add_argument("--cellpose-fields", type=int, default=2, help="fields for the Cellpose timing")
    parser.add_argument("--model", help="cellkit-trained Cellpose nucleus model (accuracy and timing)")
    parser.add_argument("--cell-model", help="Cellpose cell model (default: classical propagation from nuclei)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--_measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        backend, n, model, cell_model = args._measure
        if backend == "network":
            print(json.dumps(measure_network(int(n), args.seed)))
            return
        if backend == "floor":
            print(json.dumps(measure_floor(int(n), args.seed)))
            return
        print(json.dumps(measure(backend, int(n), None if model == "-" else model,
                                 None if cell_model == "-" else cell_model, args.seed)))
        return
    runs = {"classical": _in_subprocess(["classical", str(args.fields), "-", "-"])}
    floor = _in_subprocess(["floor", str(args.fields), "-", "-"])
    sec, ap = floor["seconds_per_field"], floor["ap@0.5"]
    print(f"classical vs plain scikit-image threshold + watershed, same {floor['n_fields']} fields, interleaved "
          f"x{floor['rounds']}: {sec['classical']:.2f} vs {sec['skimage_floor']:.2f} s/field = {floor['ratio']:.2f}x "
          f"(target <= 1.5x; CPU {floor['cpu_seconds_per_field']['classical']:.2f} vs "
          f"{floor['cpu_seconds_per_field']['skimage_floor']:.2f} s = {floor['cpu_ratio']:.2f}x); AP@0.5 nuclei {ap['classical']['nuclei']:.3f} vs {ap['skimage_floor']['nuclei']:.3f}, "
          f"cells {ap['classical']['cells']:.3f} vs {ap['skimage_floor']['cells']:.3f}")
    if args.model:
        runs["cellpose_trained"] = _in_subprocess(["cellpose", str(args.cellpose_fields), args.model,
                                                   args.cell_model or "-"])
    runs["cellpose_network_timing"] = _in_subprocess(["network", str(args.cellpose_fields), "-", "-"])
    classical = runs["classical"]
    summary = {"nuclei_ap@0.5": classical["nuclei"]["ap@0.5"], "cells_ap@0.5": classical["cells"]["ap@0.5"]}
    result = {"runs": runs, "classical_vs_skimage_floor": floor, "classical_vs_targets": {k: {"value": summary[k], "target": TARGETS[k],
                                                         "met": summary[k] >= TARGETS[k]} for k in TARGETS}}
    for name, run in runs.items():
        acc = "" if "nuclei" not in run else (f"nuclei AP@0.5 {run['nuclei']['ap@0.5']:.3f} AP@0.75 "
                                              f"{run['nuclei']['ap@0.75']:.3f} | cells AP@0.5 "
                                              f"{run['cells']['ap@0.5']:.3f} AP@0.75 {run['cells']['ap@0.75']:.3f} | ")
        print(f"{name:<28} {run['n_fields']} fields {run['field_shape'][1:]}: {acc}"
              f"{run['fields_per_second']:.3f} fields/s ({run['seconds_per_field']:.2f} s/field), "
              f"peak RSS {run['peak_rss_mib']:.0f} MiB")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "segmentation_synthetic.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["classical_vs_targets"]))


if __name__ == "__main__":
    main()
