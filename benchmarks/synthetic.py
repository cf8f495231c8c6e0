"""Speed of the synthetic plate generator: seconds per 1024x1280 field (3 channels + ground truth).

Run: .venv/bin/python benchmarks/synthetic.py [--fields 10]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

from cellkit.datasets import MOAS, MOA_EFFECTS, phenotype, render_field  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fields", type=int, default=12)
    args = parser.parse_args()
    render_field(phenotype(), (1024, 1280), rng=np.random.default_rng(0))  # warm-up
    times, cells = [], []
    for i in range(args.fields):
        moa = MOAS[i % len(MOAS)] if i % 2 else None
        params = phenotype(MOA_EFFECTS.get(moa), 1.0 if moa else 0.0)
        start = time.perf_counter()
        _, _, labels = render_field(params, (1024, 1280), rng=np.random.default_rng(i))
        times.append(time.perf_counter() - start)
        cells.append(int(labels.max()))
    save("synthetic", {"field_shape": [1024, 1280], "fields": args.fields,
                       "seconds_per_field_median": float(np.median(times)), "seconds_per_field_max": float(max(times)),
                       "cells_per_field_median": float(np.median(cells))})


if __name__ == "__main__":
    main()
