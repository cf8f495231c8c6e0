"""to_anndata + `cellkit export`: a pycytominer-ready table from synthetic ground-truth fields."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cellkit.cli import app
from cellkit.datasets import CHANNELS, SyntheticConfig, plate_layout, render_layout_field
from cellkit.features import measure_field, to_anndata

CONFIG = SyntheticConfig(n_batches=1, plates_per_batch=1, compounds_per_moa=1, n_moas=2, n_concentrations=1,
                         dmso_wells=2, sites=1, height=192, width=256, seed=5)
runner = CliRunner()


@pytest.fixture(scope="module")
def adata():
    obs, frames = [], []
    for field in plate_layout(CONFIG).to_dict("records"):
        images, nuclei, cells = render_layout_field(CONFIG, field)
        frame = measure_field(images, nuclei, cells, CHANNELS, groups=("AreaShape", "Intensity", "Correlation"))
        field_id = f"{field['plate']}/{field['well']}/{field['site']}"
        obs.append(pd.DataFrame({
            "plate": field["plate"], "well": field["well"], "site": field["site"], "batch": field["batch"],
            "compound": field["compound"], "concentration": field["concentration"], "moa": field["moa"],
            "field_id": field_id, "label": frame.index.to_numpy()},
            index=[f"{field_id}/{label}" for label in frame.index]))
        frames.append(frame)
    obs = pd.concat(obs)
    obs.index.name = "cell_id"
    return to_anndata(obs, pd.concat(frames), {"version": "test", "parameters": {"texture_scale": 3}})


def test_to_anndata(adata):
    assert adata.X.dtype == np.float32 and adata.n_obs > 10
    assert "Cells_Intensity_MeanIntensity_Actin" in adata.var_names
    assert adata.obs_names[0].count("/") == 3
    assert adata.uns["cellkit"]["parameters"]["texture_scale"] == 3
    with pytest.raises(ValueError, match="rows"):
        to_anndata(adata.obs.iloc[:2], pd.DataFrame(np.zeros((3, 1))))


def test_export_parquet_is_pycytominer_ready(adata, tmp_path):
    from pycytominer import normalize

    h5ad = tmp_path / "cells.h5ad"
    adata.write_h5ad(h5ad)
    out = tmp_path / "cells.parquet"
    result = runner.invoke(app, ["export", str(h5ad), "--format", "parquet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    meta = [c for c in table.columns if c.startswith("Metadata_")]
    assert {"Metadata_cell_id", "Metadata_plate", "Metadata_well", "Metadata_compound", "Metadata_moa"} <= set(meta)
    features = [c for c in table.columns if not c.startswith("Metadata_")]
    assert features == list(adata.var_names)
    np.testing.assert_array_equal(table[features].to_numpy(), adata.X)
    normalized = normalize(profiles=table, features="infer", meta_features="infer", samples="Metadata_compound == 'DMSO'",
                           method="standardize")
    assert normalized.shape == table.shape
    ctrl = normalized.loc[table.Metadata_compound == "DMSO", "Cells_AreaShape_Area"]
    assert abs(ctrl.mean()) < 1e-5 and abs(ctrl.std(ddof=0) - 1) < 1e-3
    # zarr AnnData and csv work as well
    adata.write_zarr(tmp_path / "cells.zarr")
    result = runner.invoke(app, ["export", str(tmp_path / "cells.zarr"), "-f", "csv", "-o", str(tmp_path / "c.csv")])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(tmp_path / "c.csv").shape == table.shape


def _words(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines


def test_export_bad_input(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path / "missing.h5ad"), "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 1 and "does not exist" in _words(result)
    bad = tmp_path / "bad.h5ad"
    bad.write_text("not an h5ad")
    result = runner.invoke(app, ["export", str(bad), "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 1 and "cannot read" in _words(result) and not (tmp_path / "x.parquet").exists()
    result = runner.invoke(app, ["export", str(bad), "--format", "xlsx", "--out", str(tmp_path / "x.xlsx")])
    assert result.exit_code == 1 and "unknown format" in _words(result)
