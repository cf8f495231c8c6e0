"""Image QC flags against known defects (synthetic) and on real out-of-focus BBBC006 Hoechst fields.

Synthetic: the fields of a plate set (`SyntheticConfig` below, rendered in memory), with known
defects added to a seeded random subset of fields per plate before measuring:
blur (cellkit's Gaussian blur, sigma 1, 2 or 4 px, all channels, then fresh shot + read noise at the blurred
level, as a defocused camera would record), saturation (one random channel scaled so that 0.2 %,
1 % or 5 % of its pixels reach 65535 and clipped there) and empty fields (background, vignetting
and noise, no cells). Flags use `cellkit.qc`'s fixed thresholds (nothing here is tuned).
Reports precision / recall per flag, recall per severity, and the ROC AUC of each focus measure.

Real: `../shared/data/real/bbbc006` w1_z00 (24 Hoechst fields, plane 0, ~32 um from focus) and
w1_z10 (9 fields, plane 10): does the focus measure rank A01 s1 plane 0 below plane 10, and
how well does each measure separate the two sets (AUC, medians)?

Usage: OMP_NUM_THREADS=1 python benchmarks/qc.py [--seed 0]   -> benchmarks/results/qc.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

from cellkit.datasets import SyntheticConfig  # noqa: E402
from cellkit.datasets.render import BACKGROUND, READ_NOISE  # noqa: E402
from cellkit.datasets.synthetic import _plate_effects, plate_layout, render_layout_field  # noqa: E402
from cellkit.models.perturb import gaussian_blur  # noqa: E402
from cellkit.qc import FLAGS, flag_fields, measure_field  # noqa: E402

PLATES = SyntheticConfig(n_batches=2, plates_per_batch=1, compounds_per_moa=3, n_moas=12, n_concentrations=2,
                         dmso_wells=4, sites=1, height=512, width=640, seed=3)
BLUR_SIGMAS = (1.0, 2.0, 4.0)
SATURATED = (0.002, 0.01, 0.05)
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "bbbc006"


def blur(images, sigma, rng):
    """cellkit's one blur (`cellkit.models.perturb.gaussian_blur`), then fresh shot + read noise."""
    b = gaussian_blur(torch.from_numpy(images.astype(np.float32))[None], sigma)[0].numpy()
    b += np.sqrt(np.maximum(b, 0) + READ_NOISE**2) * rng.standard_normal(b.shape, dtype=np.float32)
    return np.clip(b, 0, 65535).astype(images.dtype)


def saturate(images, fraction, channel):
    out = images.copy()
    plane = images[channel].astype(np.float64)
    level = np.quantile(plane, 1 - fraction)
    out[channel] = np.clip(plane * (65535.0 / max(level, 1.0)), 0, 65535).astype(np.uint16)
    return out


def empty(shape, gains, illumination, rng):
    c = len(BACKGROUND)
    bg = (BACKGROUND * np.asarray(gains))[:, None, None] * illumination
    bg = bg + np.sqrt(bg + READ_NOISE**2) * rng.standard_normal((c,) + shape).astype(np.float32)
    return np.clip(bg, 0, 65535).astype(np.uint16)


def synthetic(seed: int) -> dict:
    layout = plate_layout(PLATES)
    rng = np.random.default_rng(seed)
    channels = ["DNA", "Tubulin", "Actin"]
    effects = {p: _plate_effects(PLATES, b, p) for p, b in layout.groupby("plate")["batch_index"].first().items()}
    truth, parts = [], []
    for plate, fields in layout.groupby("plate", sort=False):
        n = len(fields)
        order = rng.permutation(n)
        n_each = max(3, int(round(0.1 * n)))
        kind = np.array(["clean"] * n, dtype=object)
        kind[order[:n_each]] = "blur"
        kind[order[n_each:2 * n_each]] = "saturated"
        kind[order[2 * n_each:2 * n_each + 2]] = "empty"
        for i, (_, f) in enumerate(fields.iterrows()):
            images, _, _ = render_layout_field(PLATES, f, effects[plate])
            severity = np.nan
            if kind[i] == "blur":
                severity = float(rng.choice(BLUR_SIGMAS))
                images = blur(images, severity, rng)
            elif kind[i] == "saturated":
                severity = float(rng.choice(SATURATED))
                images = saturate(images, severity, int(rng.integers(3)))
            elif kind[i] == "empty":
                gains = effects[plate]["gains"] * effects[plate]["background"]  # the plate's own background level
                illum = effects[plate]["illumination"]
                images = empty(images.shape[1:], gains, illum, rng)
            t = measure_field(images, channels)
            t["plate"], t["well"], t["field_id"] = plate, f.well, f"{plate}/{f.well}/{f.site}"
            parts.append(t)
            truth.append({"field_id": f"{plate}/{f.well}/{f.site}", "kind": kind[i], "severity": severity})
    table = flag_fields(pd.concat(parts, ignore_index=True))
    per_field = table.groupby("field_id", sort=False).agg(
        {**{f: "any" for f in FLAGS}, "z_power_log_log_slope": "min", "z_focus_score": "min"})
    per_field = per_field.join(pd.DataFrame(truth).set_index("field_id"))
    out = {"config": PLATES.__dict__, "n_fields": len(per_field),
           "defects": per_field.kind.value_counts().to_dict(), "flags": {}}
    for flag, kind in (("blurry", "blur"), ("saturated", "saturated"), ("empty", "empty")):
        pred, true = per_field[flag].to_numpy(), (per_field.kind == kind).to_numpy()
        tp = int((pred & true).sum())
        by_sev = (per_field[true].groupby("severity")[flag].mean().round(3).to_dict()
                  if kind != "empty" else {})
        out["flags"][flag] = {"true": int(true.sum()), "flagged": int(pred.sum()), "true_positives": tp,
                              "precision": round(tp / max(pred.sum(), 1), 3), "recall": round(tp / max(true.sum(), 1), 3),
                              "recall_by_severity": {str(k): v for k, v in by_sev.items()},
                              "false_positive_kinds": per_field[pred & ~true].kind.value_counts().to_dict()}
    mask = per_field.kind.isin(["clean", "blur"])
    y = (per_field.kind[mask] == "blur").to_numpy()
    out["blur_auc"] = {m: round(float(roc_auc_score(y, -per_field[f"z_{m}"][mask])), 3)
                       for m in ("power_log_log_slope", "focus_score")}
    return out


def real() -> dict:
    from cellkit.io import from_folder
    from cellkit.qc import qc_plate

    if not REAL.exists():
        return {"skipped": f"{REAL} is missing"}
    z00 = qc_plate(from_folder(REAL / "w1_z00", regex=r"_(?P<well>[a-p][0-9]{2})_s(?P<site>[0-9])"), saturation=4095)
    z10 = qc_plate(from_folder(REAL / "w1_z10", regex=r"__(?P<well>a[0-9]{2})__s(?P<site>[0-9])"), saturation=4095)
    out = {"n_z00": len(z00), "n_z10": len(z10), "A01_s1": {}, "separation": {}}
    for m in ("power_log_log_slope", "laplacian_var", "focus_score"):
        a0 = float(z00.loc[(z00.well == "A01") & (z00.site == 1), m].iloc[0])
        a10 = float(z10.loc[(z10.well == "A01") & (z10.site == 1), m].iloc[0])
        y = np.r_[np.zeros(len(z00)), np.ones(len(z10))]
        out["A01_s1"][m] = {"plane0": round(a0, 4), "plane10": round(a10, 4), "plane0_less_focused": a0 < a10}
        out["separation"][m] = {"median_z00": round(float(z00[m].median()), 4), "median_z10": round(float(z10[m].median()), 4),
                                "auc_z10_above_z00": round(float(roc_auc_score(y, np.r_[z00[m], z10[m]])), 3)}
    both = pd.concat([z00.assign(plane=0), z10.assign(plane=10)])
    flagged = flag_fields(both.drop(columns=[c for c in both if c.startswith("z_") or c in FLAGS or c == "qc_pass"]),
                          by="none")
    out["blurry_flags_when_pooled"] = flagged.groupby("plane")["blurry"].sum().astype(int).to_dict()
    out["flags_within_each_set"] = {"z00": z00[list(FLAGS)].sum().astype(int).to_dict(),
                                    "z10": z10[list(FLAGS)].sum().astype(int).to_dict()}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="qc", help="Result name (benchmarks/results/<name>.json).")
    args = parser.parse_args()
    save(args.name, {"seed": args.seed, "synthetic": synthetic(args.seed), "real_bbbc006": real()})


if __name__ == "__main__":
    main()
