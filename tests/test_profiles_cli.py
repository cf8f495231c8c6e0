"""`cellkit profile`, `cellkit evaluate`, `cellkit import-profiles`, and the demo's profile stage."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import cellkit as ck
from cellkit.cli import app
from cellkit.io.cells import write_cells
from cellkit.workflows.profiles import compare_representations, demo_profiles, profile_cells

from ._profile_data import planted_cells
from .conftest import real_path

runner = CliRunner()


@pytest.fixture(scope="module")
def cells_h5ad(tmp_path_factory):
    path = tmp_path_factory.mktemp("cells") / "cells.h5ad"
    planted_cells(seed=2).write_h5ad(path)
    return path


def test_profile_then_evaluate(cells_h5ad, tmp_path):
    wells, treatments = tmp_path / "wells.h5ad", tmp_path / "treatments.h5ad"
    result = runner.invoke(app, ["profile", str(cells_h5ad), "--out", str(wells), "--treatments", str(treatments),
                                 "--chunk-size", "100"])
    assert result.exit_code == 0, result.output
    w = ad.read_h5ad(wells)
    assert w.n_obs == 44 and w.obs["n_cells"].sum() == 528 and w.var["feature_selected"].all()
    assert {"aggregate", "normalize", "feature_select"} <= set(w.uns["cellkit"])
    dmso = w[w.obs.compound == "DMSO"].X
    np.testing.assert_allclose(dmso.mean(0), 0, atol=1e-5)  # normalized against DMSO wells
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", str(wells), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["NSC"] >= 0.85 and scores["NSCB"] >= 0.85 and scores["n_NSC"] == 16  # planted structure: easy
    table = pd.read_csv(out / "moa_accuracy.csv", index_col=0)
    assert len(table) == 16 and table["nsc_correct"].mean() == pytest.approx(scores["NSC"])
    for name in ("per_moa_accuracy.csv", "confusion_nsc.csv", "average_precision.csv", "loco.csv",
                 "confusion_nsc.png", "moa_distribution.png", "umap_profiles.png", "scores.json"):
        assert (out / name).stat().st_size > 0, name


def test_profile_cli_errors(cells_h5ad, tmp_path):
    result = runner.invoke(app, ["profile", str(cells_h5ad), "--out", str(tmp_path / "w.h5ad"),
                                 "--control", "compound == 'nothing'"])
    assert result.exit_code == 1 and "no row matches" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["evaluate", str(cells_h5ad), "--label", "mechanism", "--out-dir", str(tmp_path)])
    assert result.exit_code == 1 and "mechanism" in result.output
    result = runner.invoke(app, ["evaluate", str(cells_h5ad), "--preset", "fastest", "--out-dir", str(tmp_path)])
    assert result.exit_code == 1 and "--preset must be one of" in result.output
    assert not (tmp_path / "w.h5ad").exists()


def test_import_and_evaluate_bbbc021_cellprofiler_profiles(tmp_path):
    meta = real_path("bbbc021_metadata")
    table, image, moa = (meta / "ljosa_jbiomolscreen_2013_per_well_mean.csv.gz", meta / "BBBC021_v1_image.csv.gz",
                         meta / "BBBC021_v1_moa.csv")
    h5ad = tmp_path / "ljosa.h5ad"
    result = runner.invoke(app, ["import-profiles", str(table), "--out", str(h5ad), "--bbbc021-image", str(image),
                                 "--bbbc021-moa", str(moa)])
    assert result.exit_code == 0, result.output
    wells = ad.read_h5ad(h5ad)
    assert wells.shape == (632, 516) and wells.obs["moa"].notna().all()
    assert (wells.obs["compound"] == "DMSO").sum() == 330 and wells.obs["batch"].nunique() == 10
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", str(h5ad), "--preset", "plain", "--out-dir", str(out),
                                 "--no-figures"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    # BENCHMARKS.md rules: all 103 treatments scored for NSC, 92 for NSCB (Kinase inhibitors and
    # Cholesterol-lowering are each confined to one batch)
    assert scores["n_NSC"] == 103 and scores["n_NSCB"] == 92
    summary = json.loads((out / "scores.json").read_text())
    excluded_moas = set(pd.read_csv(out / "moa_accuracy.csv", index_col=0).loc[summary["excluded_NSCB"], "label"])
    assert excluded_moas == {"Kinase inhibitors", "Cholesterol-lowering"}
    assert 0.75 < scores["NSC"] < 0.95 and 0.6 < scores["NSCB"] < 0.9  # plain pipeline: ~83% / ~73%


def test_pycytominer_style_table_with_user_named_columns(tmp_path):
    a = planted_cells(seed=3, cells_per_well=2)
    frame = ck.io.to_table(a).rename(columns={"Metadata_moa": "mechanism"})
    path = tmp_path / "cells.parquet"
    frame.to_parquet(path)
    got = ck.io.read_profiles(path, metadata={"moa": "mechanism"})
    assert got.n_vars == a.n_vars and list(got.obs["moa"]) == list(a.obs["moa"])
    np.testing.assert_allclose(got.X, a.X)
    with pytest.raises(ck.io.ProfileTableError, match="not in the table"):
        ck.io.read_profiles(path, metadata={"moa": "nope"})


def test_demo_profiles_and_plots(cells_h5ad, tmp_path):
    cells = ad.read_h5ad(cells_h5ad)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 4000, size=(cells.n_obs, 3, 16, 16), dtype=np.uint16)
    masks = np.zeros((cells.n_obs, 2, 16, 16), dtype=bool)
    masks[:, :, 4:12, 4:12] = True
    obs = cells.obs.reset_index(names="cell_id")
    obs = obs.astype({c: str for c in obs.columns if isinstance(obs[c].dtype, pd.CategoricalDtype)})
    store = write_cells(tmp_path / "cells.zarr", images, masks, obs,
                        channels=["DNA", "Tubulin", "Actin"])
    outputs = demo_profiles(cells_h5ad, tmp_path / "profiles", cells_zarr=store, log=lambda *_: None)
    scores = json.loads((outputs["evaluation"] / "scores.json").read_text())
    assert scores["NSC"] >= 0.85
    clustered = ad.read_h5ad(outputs["cells_clustered"])
    assert clustered.obsm["X_umap"].shape == (cells.n_obs, 2) and clustered.obs["leiden"].nunique() >= 2
    markers = pd.read_csv(outputs["markers"])
    assert set(markers["group"].astype(str)) == set(clustered.obs["leiden"].astype(str))
    # one recipe: the demo's wells and its representations row for X are `profile_cells` with the defaults,
    # the same as `cellkit profile` without options
    wells, _ = profile_cells(cells_h5ad)
    np.testing.assert_array_equal(ad.read_h5ad(outputs["wells"]).X, wells.X)
    table = pd.read_csv(outputs["representations"], index_col=0)
    assert table.loc["X", "NSC"] == pytest.approx(scores["NSC"])
    assert compare_representations(cells).loc["X", "NSC"] == pytest.approx(scores["NSC"])
    result = runner.invoke(app, ["profile", str(cells_h5ad), "--out", str(tmp_path / "w.h5ad")])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(ad.read_h5ad(tmp_path / "w.h5ad").X, wells.X)
    for name in ("umap_cells.png", "moa_distribution_cells.png", "compound_counts.png",
                 "concentration_histogram.png", "channel_comparison.png", "example_cells_moa.png"):
        assert (outputs["figures"] / name).stat().st_size > 1000, name
    # plots return figures and refuse missing inputs clearly
    fig = ck.pl.example_cells(store, groupby="leiden", obs=clustered.obs, n_per_group=3)
    assert len(fig.axes) == 3 * clustered.obs["leiden"].nunique()
    with pytest.raises(KeyError, match="obsm has no 'X_tsne'"):
        ck.pl.umap(clustered, basis="X_tsne")
