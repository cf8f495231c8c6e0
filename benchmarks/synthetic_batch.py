"""Does the synthetic plate set make NSCB < NSC for morphology? Paired across ``batch_gain`` values.

For each seed and each ``batch_gain`` (the sd of a batch's log gain on every compound's effect), builds
`ssl_moa`'s plate set (12 MOAs x 4 compounds x 2 concentrations, 2 batches x 3 plates, ``--cells`` cells,
ground-truth cells, 96 px crops with morphology) and scores plain morphology profiles (`DEFAULT`): treatment
NSC, NSCB, mAP and the gap NSC - NSCB. Session 11 chose 0.4 with it (docs/models.md).

Run: OMP_NUM_THREADS=1 python benchmarks/synthetic_batch.py --seeds 101,103,105,107 --gains 0,0.4
(about 5 minutes per plate set on one core). Writes ``benchmarks/results/synthetic_batch.json`` (or ``--json``);
plate sets are kept under ``--out`` and reused.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ssl_moa  # noqa: E402

from cellkit.workflows.profiles import DEFAULT, compare_representations  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="101,103,105,107")
    parser.add_argument("--gains", default="0,0.4", help="batch_gain values, compared on the same seeds")
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cellkit_synthetic_batch"))
    parser.add_argument("--json", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "synthetic_batch.json")
    args = parser.parse_args()
    seeds, gains = [int(s) for s in args.seeds.split(",")], [float(g) for g in args.gains.split(",")]
    rows = []
    for seed in seeds:
        for gain in gains:
            config = dataclasses.replace(ssl_moa.plate_config(seed, args.cells), batch_gain=gain)
            _, h5ad = ssl_moa.build_cells(args.out / f"seed{seed}_gain{gain}", config, 96)
            scores = compare_representations(h5ad, **DEFAULT).loc["X"]
            row = {"seed": seed, "batch_gain": gain, **{k: float(scores[k]) for k in ("NSC", "NSCB", "mAP")},
                   "gap": float(scores["NSC"] - scores["NSCB"]), "n_treatments": int(scores["n_treatments"])}
            rows.append(row)
            print(f"seed {seed:>4} gain {gain:<4} NSC {row['NSC']:.3f} NSCB {row['NSCB']:.3f} mAP {row['mAP']:.3f} "
                  f"gap {row['gap']:+.3f}", flush=True)
    for gain in gains:
        gaps = [r["gap"] for r in rows if r["batch_gain"] == gain]
        print(f"gain {gain}: mean gap {sum(gaps) / len(gaps):+.3f}, NSCB < NSC on {sum(g > 0 for g in gaps)} of "
              f"{len(gaps)} seeds")
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "cells": args.cells, "pipeline": DEFAULT}, indent=2, default=str))
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
