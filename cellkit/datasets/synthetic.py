"""Synthetic BBBC021-like plate sets, written exactly in BBBC021's layout, with ground truth.

Layout under ``out``::

    BBBC021_v1_image.csv, BBBC021_v1_moa.csv      # BBBC021's own table formats
    <batch>/<plate>/<well>_s<site>_w1<UUID>.tif    # DNA (DAPI), uint16
    <batch>/<plate>/<well>_s<site>_w2<UUID>.tif    # Tubulin
    <batch>/<plate>/<well>_s<site>_w4<UUID>.tif    # Actin
    ground_truth/<plate>/<well>_s<site>_{nuclei,cells}.tif   # uint32 labels, nucleus k in cell k
    synthetic.json                                 # parameters, seed, version

Each compound belongs to one batch (its replicate plates all sit in that batch, as in BBBC021),
and the compounds of one MOA are spread round-robin over the batches: with more compounds per MOA
than batches, some same-MOA compounds share a batch (easy NSC neighbours) and others do not (the
only ones NSCB allows), so NSCB is harder than NSC, as in BBBC021. Every plate has DMSO wells.

Batch effects (scaled by ``batch_effect``; 0 turns them off), drawn per batch from the seed, with
smaller plate-to-plate jitter within a batch: per-channel stain gain and background level;
illumination (a vignetting pattern shared by a batch's plates); focus (optical blur); and a cell
state (cell and nucleus size, shape, density, texture, mitotic fraction, sensitivity to the
compounds, and a gain per parameter on every compound's effect, which same-batch compounds of an MOA
share: ``batch_gain``), so that, as in real screens, per-plate normalization against DMSO does not
remove them all and same-batch neighbours look more alike than same-MOA ones (NSCB < NSC).
"""

from __future__ import annotations

import json
import os
import uuid
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from .. import __version__
from .._parallel import Runner
from .._atomic import atomic_path
from .phenotypes import (BASELINE, CONTROL, MAX_COMPOUNDS_PER_MOA, MOAS, compound_signature, compounds_for,
                         dose_fraction, phenotype)
from .render import illumination_field, render_field

CHANNEL_CODES = {"DAPI": "w1", "Tubulin": "w2", "Actin": "w4"}
ROWS = "BCDEFG"
COLUMNS = [f"{c:02d}" for c in range(2, 12)]  # B02..G11: the 60 inner wells, as in BBBC021


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and content of a synthetic plate set. Defaults make a small, fast demo plate set."""

    n_batches: int = 2
    plates_per_batch: int = 2
    compounds_per_moa: int = 3
    n_moas: int = 12
    n_concentrations: int = 2
    dmso_wells: int = 4
    sites: int = 1
    height: int = 512
    width: int = 640
    seed: int = 0
    batch_effect: float = 1.0
    # sd of a batch's log gain on each parameter of every compound's effect, at batch_effect 1 (the batch x compound
    # interaction of real screens; 0.4 chosen in session 11 so that NSCB < NSC for morphology, docs/models.md)
    batch_gain: float = 0.4

    def validate(self):
        problems = []
        for name in ("n_batches", "plates_per_batch", "compounds_per_moa", "n_concentrations", "dmso_wells", "sites"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if not 1 <= self.n_moas <= len(MOAS):
            problems.append(f"n_moas must be in 1..{len(MOAS)}")
        if self.compounds_per_moa > MAX_COMPOUNDS_PER_MOA:
            problems.append(f"compounds_per_moa must be <= {MAX_COMPOUNDS_PER_MOA}")
        if not 0 <= self.batch_effect <= 3:
            problems.append("batch_effect must be in 0..3")
        if not 0 <= self.batch_gain <= 1:
            problems.append("batch_gain must be in 0..1")
        if self.height < 64 or self.width < 64:
            problems.append("fields must be at least 64x64")
        if problems:
            raise ValueError("invalid synthetic plate config: " + "; ".join(problems))
        return self


def treatments(config: SyntheticConfig) -> pd.DataFrame:
    """One row per treatment: compound, concentration, moa, batch, ec50, effect."""
    rows = []
    for m, moa in enumerate(MOAS[: config.n_moas]):
        for k, compound in enumerate(compounds_for(moa, config.compounds_per_moa)):
            sig = compound_signature(compound, moa, config.seed)
            # compounds of one MOA go to different batches (round robin, shifted per MOA)
            batch = (m + k) % config.n_batches
            steps = np.geomspace(0.5, 5.0, config.n_concentrations) if config.n_concentrations > 1 else [2.0]
            for step in steps:
                conc = float(f"{sig['ec50'] * step:.3g}")
                rows.append({"compound": compound, "concentration": conc, "moa": moa, "batch_index": batch,
                             "fraction": dose_fraction(conc, sig["ec50"]), "effect": sig["effect"]})
    return pd.DataFrame(rows)


def plate_layout(config: SyntheticConfig) -> pd.DataFrame:
    """One row per field: batch, plate, well, site, compound, concentration, moa, replicate."""
    config.validate()
    table = treatments(config)
    wells = [f"{r}{c}" for r in ROWS for c in COLUMNS]
    rows = []
    for b in range(config.n_batches):
        batch = f"Week{b + 1}"
        content = [(CONTROL, 0.0, CONTROL, 0.0, {})] * config.dmso_wells
        content += [(t.compound, t.concentration, t.moa, t.fraction, t.effect)
                    for t in table[table.batch_index == b].itertuples()]
        if len(content) > len(wells):
            raise ValueError(f"{len(content)} wells needed on a plate of batch {batch}; a plate has {len(wells)}")
        for p in range(config.plates_per_batch):
            plate = f"{batch}_{10001 + b * 100 + p}"
            order = np.random.default_rng([config.seed, b, p]).permutation(len(content))
            for well, i in zip(wells, order):
                compound, conc, moa, fraction, effect = content[i]
                for site in range(1, config.sites + 1):
                    rows.append({"batch": batch, "batch_index": b, "plate": plate, "plate_index": p, "well": well,
                                 "site": site, "replicate": p + 1, "compound": compound, "concentration": conc,
                                 "moa": moa, "fraction": fraction, "effect": effect})
    return pd.DataFrame(rows)


def _field_rng(config: SyntheticConfig, *keys) -> np.random.Generator:
    return np.random.default_rng([config.seed] + [zlib.crc32(str(k).encode()) for k in keys])


# Cell-state parameters a batch shifts (log-scale sd at batch_effect 1; "mitotic" is additive), and those
# of its cells' shared response to any compound (added in proportion to the dose fraction).
BATCH_STATE = {"cell_radius": 0.08, "nucleus_radius": 0.08, "elongation": 0.10, "density": 0.25,
               "dna_texture": 0.20, "tubulin_fibre": 0.20, "actin_cortex": 0.20, "mitotic": 0.015}
BATCH_RESPONSE = {"cell_radius": 0.06, "nucleus_radius": 0.06, "elongation": 0.1, "dna": 0.08, "tubulin": 0.1,
                  "actin": 0.1, "density": 0.1, "mitotic": 0.02}


def _plate_effects(config: SyntheticConfig, batch_index: int, plate: str) -> dict:
    """Batch and plate effects of one plate (see the module docstring): a dict with ``gains``,
    ``background`` (3,), ``illumination`` (3, H, W), ``focus`` (px), ``state`` (parameter -> shift),
    ``sensitivity`` (factor on the dose response), ``gain`` (parameter -> factor on every compound's effect) and
    ``response`` (parameter -> shift at full dose, for any compound)."""
    s = float(config.batch_effect)
    batch_rng = _field_rng(config, "batch", batch_index)
    plate_rng = _field_rng(config, "plate", plate)
    shape = (config.height, config.width)
    batch_illum = illumination_field(shape, batch_rng, strength=s * batch_rng.uniform(0.2, 0.5))
    effects = {
        "gains": np.exp(batch_rng.normal(0, 0.3 * s, 3)) * np.exp(plate_rng.normal(0, 0.06 * s, 3)),
        "background": np.exp(batch_rng.normal(0, 0.3 * s, 3)),
        "focus": float(np.exp(batch_rng.normal(0, 0.25 * s) + plate_rng.normal(0, 0.05 * s))),
        "state": {k: float(batch_rng.normal(0, sd * s)) for k, sd in BATCH_STATE.items()},
        "sensitivity": float(np.exp(batch_rng.normal(0, 0.15 * s))),
        "response": {k: float(batch_rng.normal(0, sd * s)) for k, sd in BATCH_RESPONSE.items()},
        "gain": {k: float(np.exp(batch_rng.normal(0, config.batch_gain * s))) for k in sorted(BASELINE)},
    }
    effects["illumination"] = np.stack([batch_illum * illumination_field(shape, plate_rng, strength=s *
                                                                          plate_rng.uniform(0.05, 0.15))
                                        for _ in range(3)])
    return effects


def batch_phenotype(effect: dict, fraction: float, effects: dict) -> dict:
    """The phenotype of a treatment (``effect`` at dose ``fraction``) in the cell state of a batch: the batch's
    sensitivity scales the dose, its gains scale each parameter's effect, its shared response to any compound is
    added, then its cell state."""
    fraction = min(1.0, fraction * effects["sensitivity"])
    effect = {key: value * effects["gain"][key] for key, value in (effect or {}).items()}
    if fraction > 0:
        for key, shift in effects["response"].items():
            effect[key] = effect.get(key, 0.0) + shift
    params = phenotype(effect, fraction)
    for key, shift in effects["state"].items():
        if key == "mitotic":
            params[key] = float(np.clip(params[key] + shift, 0.0, 1.0))
        else:
            params[key] *= float(np.exp(shift))
    params["elongation"] = max(params["elongation"], 1.0)
    return params


def render_layout_field(config: SyntheticConfig, field: pd.Series | dict, plate_effects=None):
    """Render one field of `plate_layout`. Returns (images (3,H,W) uint16, nuclei, cells uint32)."""
    field = dict(field)
    effects = plate_effects or _plate_effects(config, field["batch_index"], field["plate"])
    params = batch_phenotype(field["effect"], field["fraction"], effects)
    rng = _field_rng(config, field["plate"], field["well"], field["site"])
    return render_field(params, (config.height, config.width), rng=rng, gains=effects["gains"],
                        illumination=effects["illumination"], focus=effects["focus"],
                        background=effects["background"])


def _file_uuid(config: SyntheticConfig, *keys) -> str:
    return str(uuid.UUID(bytes=_field_rng(config, "uuid", *keys).bytes(16))).upper()


def write_synthetic_plate(out: str | os.PathLike, config: SyntheticConfig | None = None, *,
                          workers: int = 2, progress=None) -> Path:
    """Write a synthetic plate set under ``out`` in BBBC021's layout (see module docstring).

    The set is written to a temporary folder and moved to ``out`` at the end, so ``out`` is
    never left half-written. ``workers`` fields are rendered at once (`cellkit._parallel.Runner`, local
    threads; the files do not depend on it). ``progress(n_done, n_total)`` is called after each field.
    Returns ``out``.
    """
    config = (config or SyntheticConfig()).validate()
    layout = plate_layout(config)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    effects = {p: _plate_effects(config, b, p) for p, b in layout.groupby("plate")["batch_index"].first().items()}
    with atomic_path(out) as tmp:
        rows = []
        for f in layout.itertuples():
            names = {ch: f"{f.well}_s{f.site}_{code}{_file_uuid(config, f.plate, f.well, f.site, ch)}.tif"
                     for ch, code in CHANNEL_CODES.items()}
            rows.append((f, names))

        def write(item):
            f, names = item
            images, nuclei, cells = render_layout_field(config, f._asdict(), effects[f.plate])
            folder = tmp / f.batch / f.plate
            folder.mkdir(parents=True, exist_ok=True)
            for c, ch in enumerate(CHANNEL_CODES):
                tifffile.imwrite(folder / names[ch], images[c])
            gt = tmp / "ground_truth" / f.plate
            gt.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(gt / f"{f.well}_s{f.site}_nuclei.tif", nuclei, compression="zlib")
            tifffile.imwrite(gt / f"{f.well}_s{f.site}_cells.tif", cells, compression="zlib")

        Runner(workers=max(1, workers)).map(write, rows, progress=progress)
        _write_tables(tmp, layout, rows, config)
    return out


def _write_tables(folder: Path, layout: pd.DataFrame, rows, config: SyntheticConfig) -> None:
    image = pd.DataFrame([{
        "TableNumber": f.batch_index + 1, "ImageNumber": i + 1,
        "Image_FileName_DAPI": names["DAPI"], "Image_PathName_DAPI": f"{f.batch}/{f.plate}",
        "Image_FileName_Tubulin": names["Tubulin"], "Image_PathName_Tubulin": f"{f.batch}/{f.plate}",
        "Image_FileName_Actin": names["Actin"], "Image_PathName_Actin": f"{f.batch}/{f.plate}",
        "Image_Metadata_Plate_DAPI": f.plate, "Image_Metadata_Well_DAPI": f.well, "Replicate": f.replicate,
        "Image_Metadata_Compound": f.compound, "Image_Metadata_Concentration": f.concentration,
    } for i, (f, names) in enumerate(rows)])
    image.to_csv(folder / "BBBC021_v1_image.csv", index=False)
    moa = layout[["compound", "concentration", "moa"]].drop_duplicates().sort_values(["moa", "compound", "concentration"])
    moa.to_csv(folder / "BBBC021_v1_moa.csv", index=False, float_format="%.6f")
    meta = {"generator": "cellkit.datasets.write_synthetic_plate", "version": __version__,
            "config": asdict(config), "channels": {"DAPI": "DNA", "Tubulin": "Tubulin", "Actin": "Actin"},
            "n_fields": len(rows), "n_plates": int(layout.plate.nunique())}
    (folder / "synthetic.json").write_text(json.dumps(meta, indent=2))


def ground_truth_paths(root: str | os.PathLike, plate: str, well: str, site: int) -> dict[str, Path]:
    """Paths of a field's ground-truth label images: ``{"nuclei": ..., "cells": ...}``."""
    folder = Path(root) / "ground_truth" / plate
    return {k: folder / f"{well}_s{site}_{k}.tif" for k in ("nuclei", "cells")}


def synthetic_index(root: str | os.PathLike) -> pd.DataFrame:
    """Plate index of a synthetic plate set written by `write_synthetic_plate`."""
    from ..io import from_bbbc021

    root = Path(root)
    return from_bbbc021(root / "BBBC021_v1_image.csv", root / "BBBC021_v1_moa.csv", root)


def write_ground_truth_labels(root: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy a synthetic plate set's ground-truth labels into a label store (``labels.zarr``)."""
    from ..io.labels import write_field_labels

    for f in synthetic_index(root).itertuples():
        paths = ground_truth_paths(root, f.plate, f.well, f.site)
        write_field_labels(out, f.field_id, tifffile.imread(paths["nuclei"]), tifffile.imread(paths["cells"]),
                           attrs={"source": "ground_truth"})
    return Path(out)
