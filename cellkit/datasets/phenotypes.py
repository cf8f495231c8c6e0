"""Cell phenotypes of the synthetic plates: baseline cells, MOA effects, dose response.

A phenotype is a dict of parameters that `render_field` turns into cells. Each MOA moves a
few parameters in its own direction; each compound adds a small signature of its own and
has its own potency, and the effect grows with concentration along a Hill curve.
"""

from __future__ import annotations

import zlib

import numpy as np

# Baseline (DMSO) cell. Multiplicative parameters change as base * exp(effect);
# fraction parameters as clip(base + effect, 0, 1).
BASELINE = {
    "cell_radius": 30.0,      # px, mean cell radius
    "nucleus_radius": 11.0,   # px
    "elongation": 1.5,        # cell axis ratio (>= 1)
    "dna": 1.0,               # DNA stain level
    "dna_texture": 0.25,      # chromatin granularity amplitude
    "tubulin": 1.0,
    "tubulin_fibre": 0.5,     # amplitude of filament texture (0 = diffuse)
    "actin": 1.0,
    "actin_cortex": 0.6,      # cortical actin rim strength
    "density": 1.0,           # cells per field, relative
    "spread": 1.0,            # colony spread (lower = tighter clusters)
    "mitotic": 0.03,          # fraction of cells in mitosis (round, condensed DNA)
    "lobed": 0.0,             # fraction of polyploid cells with large lobed nuclei
    "puncta": 0.0,            # fraction of cells with actin aggregates
}
FRACTIONS = {"mitotic", "lobed", "puncta"}

# Direction of each MOA at full effect (parameter -> effect).
MOA_EFFECTS = {
    "Actin disruptors": {"puncta": 0.9, "actin_cortex": -1.2, "actin": -0.2, "elongation": -0.25},
    "Aurora kinase inhibitors": {"lobed": 0.6, "nucleus_radius": 0.3, "cell_radius": 0.25, "dna": 0.2},
    "Cholesterol-lowering": {"cell_radius": 0.15, "actin_cortex": 0.5, "tubulin": -0.2, "elongation": 0.2},
    "DNA damage": {"nucleus_radius": 0.35, "dna_texture": 0.9, "cell_radius": 0.2, "dna": -0.15},
    "DNA replication": {"nucleus_radius": 0.15, "dna": -0.35, "density": -0.4, "dna_texture": -0.5},
    "Eg5 inhibitors": {"mitotic": 0.5, "density": -0.15},
    "Epithelial": {"cell_radius": 0.2, "elongation": -0.35, "actin_cortex": 0.8, "spread": -0.5},
    "Kinase inhibitors": {"elongation": 0.45, "cell_radius": -0.15, "tubulin_fibre": 0.35, "actin": 0.25},
    "Microtubule destabilizers": {"tubulin_fibre": -1.8, "elongation": -0.5, "mitotic": 0.25, "tubulin": 0.15},
    "Microtubule stabilizers": {"tubulin_fibre": 1.0, "tubulin": 0.45, "mitotic": 0.15},
    "Protein degradation": {"dna_texture": 0.4, "actin": -0.35, "tubulin": 0.3, "cell_radius": -0.15},
    "Protein synthesis": {"cell_radius": -0.3, "tubulin": -0.45, "actin": -0.45, "dna": -0.15, "density": -0.25},
}

# Real BBBC021 compound names, a few per MOA.
MOA_COMPOUNDS = {
    "Actin disruptors": ["cytochalasin B", "latrunculin B", "cytochalasin D"],
    "Aurora kinase inhibitors": ["AZ258", "AZ841", "AZ-A"],
    "Cholesterol-lowering": ["mevinolin/lovastatin", "simvastatin"],
    "DNA damage": ["mitomycin C", "etoposide", "cisplatin", "chlorambucil"],
    "DNA replication": ["mitoxantrone", "floxuridine", "camptothecin", "methotrexate"],
    "Eg5 inhibitors": ["AZ-C", "AZ138"],
    "Epithelial": ["PP-2", "AZ-U", "AZ-J"],
    "Kinase inhibitors": ["PD-169316", "alsterpaullone", "bryostatin"],
    "Microtubule destabilizers": ["vincristine", "demecolcine", "nocodazole", "colchicine"],
    "Microtubule stabilizers": ["docetaxel", "taxol", "epothilone B"],
    "Protein degradation": ["ALLN", "MG-132", "proteasome inhibitor I", "lactacystin"],
    "Protein synthesis": ["emetine", "anisomycin", "cyclohexamide"],
}
MOAS = sorted(MOA_EFFECTS)
MAX_COMPOUNDS_PER_MOA = 4


def compounds_for(moa: str, n: int) -> list[str]:
    """``n`` compound names of an MOA: real BBBC021 names first, then ``"<MOA> #k"``."""
    names = MOA_COMPOUNDS[moa][:n]
    return names + [f"{moa} #{k}" for k in range(len(names) + 1, n + 1)]
CONTROL = "DMSO"


def _name_rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def compound_signature(compound: str, moa: str, seed: int) -> dict:
    """Per-compound effect vector (MOA direction scaled, plus a small compound-specific offset)
    and potency ``ec50`` (uM). Deterministic in (compound, seed)."""
    rng = _name_rng(compound, seed)
    effect = {k: v * rng.uniform(0.85, 1.15) for k, v in MOA_EFFECTS[moa].items()}
    for key in rng.choice(sorted(set(BASELINE) - FRACTIONS), size=2, replace=False):
        effect[key] = effect.get(key, 0.0) + rng.normal(0, 0.08)
    return {"effect": effect, "ec50": float(10 ** rng.uniform(-1.0, 0.5))}


def dose_fraction(concentration: float, ec50: float, hill: float = 1.5) -> float:
    """Hill curve: fraction of the full effect reached at ``concentration``."""
    if concentration <= 0:
        return 0.0
    return float(concentration**hill / (concentration**hill + ec50**hill))


def phenotype(effect: dict | None = None, fraction: float = 0.0) -> dict:
    """Parameters of a treated cell population: BASELINE moved by ``fraction * effect``."""
    params = dict(BASELINE)
    for key, value in (effect or {}).items():
        if key in FRACTIONS:
            params[key] = float(np.clip(params[key] + fraction * value, 0.0, 1.0))
        else:
            params[key] = params[key] * float(np.exp(fraction * value))
    params["elongation"] = max(params["elongation"], 1.0)
    return params
