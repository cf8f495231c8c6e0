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


def test_export_embeddings_for_pycytominer_and_copairs(adata, tmp_path):
    """obsm embeddings travel as <rep>_0..n columns; pycytominer aggregates / normalizes them and
    copairs retrieves same-compound cells from them."""
    from copairs.map import average_precision
    from pycytominer import aggregate, normalize

    adata = adata.copy()
    rng = np.random.default_rng(0)
    compounds = adata.obs["compound"].astype(str).to_numpy()
    centres = {c: rng.normal(0, 3, 8) for c in np.unique(compounds)}
    adata.obsm["X_simclr"] = (rng.normal(0, 1, (adata.n_obs, 8)) + np.stack([centres[c] for c in compounds])
                              ).astype(np.float32)
    adata.obsm["X_pca"] = rng.normal(0, 1, (adata.n_obs, 3)).astype(np.float32)
    h5ad = tmp_path / "cells.h5ad"
    adata.write_h5ad(h5ad)
    out = tmp_path / "cells.parquet"
    result = runner.invoke(app, ["export", str(h5ad), "-o", str(out), "--embeddings", "X_simclr"])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    emb = [f"simclr_{i}" for i in range(8)]
    assert list(table.columns[-8:]) == emb and "pca_0" not in table.columns
    assert list(table.columns[:len(table.columns) - 8 - adata.n_vars]) == [c for c in table if c.startswith("Metadata_")]
    np.testing.assert_array_equal(table[emb].to_numpy(), adata.obsm["X_simclr"])
    assert table["Metadata_cell_id"].tolist() == list(adata.obs_names)

    wells = aggregate(table, strata=["Metadata_plate", "Metadata_well"], features=emb, operation="median")
    expected = table.groupby(["Metadata_plate", "Metadata_well"])[emb].median().reset_index()
    np.testing.assert_allclose(wells.sort_values("Metadata_well")[emb].to_numpy(),
                               expected.sort_values("Metadata_well")[emb].to_numpy(), rtol=1e-5)
    normalized = normalize(profiles=table, features=emb, meta_features="infer",
                           samples="Metadata_compound == 'DMSO'", method="standardize")
    ctrl = normalized.loc[table.Metadata_compound == "DMSO", emb]
    np.testing.assert_allclose(ctrl.mean(), 0, atol=1e-5)

    meta = table[["Metadata_compound", "Metadata_well"]].copy()
    ap = average_precision(meta, table[emb].to_numpy(), pos_sameby=["Metadata_compound"], pos_diffby=[],
                           neg_sameby=[], neg_diffby=["Metadata_compound"], progress_bar=False)
    assert len(ap) == len(table) and ap["average_precision"].mean() > 0.8  # compounds are well separated
    # all embeddings by default, none on request
    result = runner.invoke(app, ["export", str(h5ad), "-o", str(tmp_path / "all.parquet")])
    assert result.exit_code == 0 and {"simclr_7", "pca_2"} <= set(pd.read_parquet(tmp_path / "all.parquet").columns)
    result = runner.invoke(app, ["export", str(h5ad), "-o", str(tmp_path / "none.parquet"), "--embeddings", "none",
                                 "--no-features"])
    assert result.exit_code == 0
    assert all(c.startswith("Metadata_") for c in pd.read_parquet(tmp_path / "none.parquet").columns)
    result = runner.invoke(app, ["export", str(h5ad), "-o", str(tmp_path / "x.parquet"), "--embeddings", "X_nope"])
    assert result.exit_code == 1 and "no embedding 'X_nope'" in _words(result)
