"""Small AnnData with planted MOA structure for the profile tests (cells -> wells)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

CHANNELS = ["DNA", "Tubulin", "Actin"]


def planted_cells(*, n_moas: int = 4, compounds_per_moa: int = 2, n_batches: int = 2, cells_per_well: int = 12,
                  n_features: int = 24, dmso_wells: int = 3, seed: int = 0) -> ad.AnnData:
    """Cells x features: each MOA shifts cells along its own direction, each compound adds a small
    signature, each plate adds an offset. Compound k of an MOA sits in batch k % n_batches; each
    treatment (2 concentrations) has one well per plate of its batch (2 plates per batch)."""
    rng = np.random.default_rng(seed)
    names = [f"Cells_Intensity_MeanIntensity_{c}" for c in CHANNELS]
    names += [f"Nuclei_AreaShape_F{j}" for j in range(n_features - len(names))]
    moa_dirs = rng.normal(size=(n_moas, n_features)) * 2.0
    rows, X = [], []
    well_no = 0
    for batch in range(n_batches):
        for rep in range(2):
            plate = f"Week{batch + 1}_{rep}"
            offset = rng.normal(size=n_features) * 0.5
            wells = [("DMSO", 0.0, "DMSO", None)] * dmso_wells
            for m in range(n_moas):
                for k in range(compounds_per_moa):
                    if k % n_batches == batch:
                        sig = np.random.default_rng([seed, m, k]).normal(size=n_features) * 0.4
                        for conc in (1.0, 3.0):
                            wells.append((f"cpd{m}_{k}", conc, f"MOA{m}", moa_dirs[m] * conc / 3 + sig))
            for w, (compound, conc, moa, effect) in enumerate(wells):
                well = f"{'BCDEFG'[w // 10]}{w % 10 + 2:02d}"
                shift = offset + (0 if effect is None else effect)
                X.append(rng.normal(size=(cells_per_well, n_features)) + shift + 10.0)
                for c in range(cells_per_well):
                    rows.append(dict(plate=plate, well=well, site=1 + c % 2, batch=f"Week{batch + 1}",
                                     compound=compound, concentration=conc, moa=moa, label=c + 1))
                well_no += 1
    obs = pd.DataFrame(rows)
    obs.index = (obs.plate + "/" + obs.well + "/" + obs.site.astype(str) + "/" + obs.label.astype(str)).to_numpy()
    obs["crop_index"] = np.arange(len(obs))
    return ad.AnnData(X=np.concatenate(X).astype(np.float32), obs=obs, var=pd.DataFrame(index=names))
