"""Batch and plate-position corrections as options of the default profile pipeline, measured.

For each dataset (Ljosa per-well means, the pycytominer-processed file, cellkit's synthetic plates):
the default pipeline (`cellkit evaluate` with no options) and the same pipeline with one correction:

- ``position``: row/column median polish of the wells after per-plate normalization (`ck.pp.position_correct`);
- ``combat``: ComBat on the batch (week) after feature selection (`scanpy.pp.combat` via `ck.pp.combat`);
- ``tvn-batch``: spherize (TVN) on each batch's DMSO wells instead of all DMSO wells;
- ``harmony``: Harmony on the batch (harmonypy, `ck.pp.harmony`) on the default's PCA (``n_comps``); when the
  default has no PCA step, on a 50-component PCA, beside ``pca50`` (the default + ``n_comps=50``, the same PCA
  without Harmony) so the PCA's own effect is visible.

Library defaults for every correction (nothing tuned here). NSC / NSCB / mAP / LOCO by cellkit's scorers.
Note: in BBBC021 every compound is imaged in one batch, so batch and compound are confounded.

    OMP_NUM_THREADS=1 nice python benchmarks/profiles_batch.py [--datasets ljosa pycytominer synthetic] [--synth PATH]
        [--name profiles_batch_synth]

Prints and writes benchmarks/results/profiles_batch.json (or NAME.json).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402
from _profiles_data import SYNTH, TREATMENT, full_scores, load  # noqa: E402

from cellkit.workflows.profiles import DEFAULT, prepare_profiles  # noqa: E402


def corrections() -> dict[str, dict]:
    """Row name -> options of `prepare_profiles` added to DEFAULT."""
    rows = {c: {"correct": c} for c in ("none", "position", "combat", "tvn-batch")}
    if DEFAULT.get("n_comps") is None:  # harmony's 50-component PCA on its own
        rows["pca50"] = {"n_comps": 50}
    rows["harmony"] = {"correct": "harmony"}
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ljosa", "pycytominer", "synthetic"])
    parser.add_argument("--synth", type=Path, default=SYNTH)
    parser.add_argument("--name", default="profiles_batch", help="Results file name.")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    results = {"default": DEFAULT}
    for name in args.datasets:
        wells = load(name, synth=args.synth)
        print(f"{name}: {wells.n_obs} wells x {wells.n_vars} features, {wells.obs['batch'].nunique()} batches",
              flush=True)
        rows = {}
        for correction, options in corrections().items():
            t = time.perf_counter()
            treatments = prepare_profiles(wells, treatment=TREATMENT, **{**DEFAULT, **options})
            rows[correction] = {**full_scores(treatments), "wall_s": round(time.perf_counter() - t, 2)}
            r = rows[correction]
            print(f"  {correction:<10} NSC {r['NSC']}  NSCB {r['NSCB']}  mAP {r['mAP']}  LOCO {r['LOCO']}  "
                  f"({r['wall_s']} s)", flush=True)
        results[name] = rows
    save(args.name, results)


if __name__ == "__main__":
    main()
