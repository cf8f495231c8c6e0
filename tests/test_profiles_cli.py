"""`cellkit profile`, `cellkit evaluate`, `cellkit import-profiles`, and the demo's profile stage."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from typer.testing import CliRunner

import cellkit as ck
from cellkit.cli import app
from cellkit.io.cells import write_cells
from cellkit.workflows.profiles import compare_representations, demo_profiles, evaluate_profiles, profile_cells

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
    # the default pipeline, recorded step by step
    assert {"aggregate", "normalize", "feature_select", "impute", "spherize", "pca", "l2_normalize"} <= set(w.uns["cellkit"])
    assert w.uns["cellkit"]["normalize"]["method"] == "iqm" and w.uns["cellkit"]["spherize"]["method"] == "zca"
    assert w.uns["cellkit"]["normalize"]["clip"] == 9 and w.uns["cellkit"]["spherize"]["epsilon"] == 3
    # DEFAULT's 100 components, clamped to wells - 1 or features - 1 on this small plate set, recorded
    n_comps = min(44, w.n_vars) - 1
    assert w.uns["cellkit"]["pca"]["n_comps"] == n_comps and w.uns["cellkit"]["pca"]["n_comps_asked"] == 100
    assert w.obsm["X_profile_pca"].shape == (44, n_comps) and ad.read_h5ad(treatments).n_vars == n_comps
    np.testing.assert_allclose(np.linalg.norm(w.obsm["X_profile_pca"], axis=1), 1.0, rtol=1e-5)  # unit length
    assert w.uns["cellkit"]["treatments"]["func"] == "mean"
    assert w.uns["cellkit"]["treatments"]["use_rep"] == "X_profile_pca" and "X_pca" not in w.obsm  # scanpy's key free
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", str(wells), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "already processed by cellkit" in result.output  # not normalized twice
    said = " ".join(result.output.split())  # the console wraps long lines
    assert "treatment = mean of wells in obsm['X_profile_pca']" in said  # aggregated as `cellkit profile` did
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    direct = evaluate_profiles(ad.read_h5ad(treatments), figures=False)  # profile's own treatments
    assert (scores["NSC"], scores["NSCB"]) == (direct["NSC"], direct["NSCB"])
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
    assert result.exit_code == 1 and "preset must be one of" in result.output
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
    outputs = demo_profiles(cells_h5ad, tmp_path / "profiles", cells_zarr=store)
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
    assert list(table.index) == ["X"]  # the cells' own representations, not the clustering's X_pca / X_umap
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
    n_clusters = clustered.obs["leiden"].nunique()
    assert fig.axes[0].images[0].get_array().shape[:2] == (n_clusters * 18, 3 * 18)  # a row of 3 per cluster
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [str(k) for k in range(n_clusters)]
    with pytest.raises(KeyError, match="obsm has no 'X_tsne'"):
        ck.pl.umap(clustered, basis="X_tsne")


def test_evaluate_without_options_uses_the_validated_default_in_both_column_conventions(tmp_path):
    """`cellkit evaluate` with no pipeline options on the Ljosa per-well means (Image_Metadata_ columns, and
    the same table with plain Plate / Well columns): the default pipeline's figures (docs/profiles.md)."""
    meta = real_path("bbbc021_metadata")
    table = pd.read_csv(meta / "ljosa_jbiomolscreen_2013_per_well_mean.csv.gz")
    plain = tmp_path / "plain.csv.gz"
    table.rename(columns={"Image_Metadata_Plate": "Plate", "Image_Metadata_Well": "Well"}).to_csv(plain, index=False)
    join = ["--bbbc021-image", str(meta / "BBBC021_v1_image.csv.gz"), "--bbbc021-moa", str(meta / "BBBC021_v1_moa.csv")]
    results = []
    for path in (meta / "ljosa_jbiomolscreen_2013_per_well_mean.csv.gz", plain):
        out = tmp_path / f"eval_{len(results)}"
        result = runner.invoke(app, ["evaluate", str(path), *join, "--out-dir", str(out), "--no-figures"])
        assert result.exit_code == 0, result.output
        results.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert results[0] == results[1]
    # issue 16's targets (docs/profiles.md: NSC 95.1%, NSCB 85.9%; the default comes from the flatness rule on a
    # grid fixed before scoring, not from these scores)
    assert results[0]["NSC"] >= 0.90 and results[0]["NSCB"] >= 0.80 and results[0]["n_NSC"] == 103
    # the pycytominer-processed file: no batch column, taken from the plate-name prefix (Week4_27481 -> Week4)
    result = runner.invoke(app, ["evaluate", str(meta / "BBBC021_feature_selected_mad_robustize.csv.gz"),
                                 "--out-dir", str(tmp_path / "pyc"), "--no-figures"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert "plate-name prefix" in result.output and scores["n_NSCB"] == 92
    assert scores["NSC"] >= 0.90 and scores["NSCB"] >= 0.78  # docs/profiles.md: 93.2% / 80.4%


def test_tables_without_metadata_prefix_and_bad_cells(tmp_path):
    a = planted_cells(seed=4, cells_per_well=1)
    frame = ck.io.to_table(a, prefix="")
    got = ck.io.from_table(frame)  # metadata = text columns and metadata-like names (concentration, site, label)
    assert got.n_vars == a.n_vars and {"plate", "well", "compound", "concentration", "moa"} <= set(got.obs)
    np.testing.assert_allclose(got.X, a.X)
    names = ["plate", "well", "site", "batch", "compound", "concentration", "moa", "label", "crop_index"]
    got = ck.io.from_table(frame, metadata_cols=names)
    assert list(got.obs.columns) == names and got.n_vars == a.n_vars
    with pytest.raises(ck.io.ProfileTableError, match="'well'"):
        ck.io.from_table(frame, metadata_cols=["plate", "site", "concentration", "label"])
    with pytest.raises(ck.io.ProfileTableError, match="'nope'"):
        ck.io.from_table(frame, metadata_cols=["nope"])
    broken = frame.astype({a.var_names[3]: object})
    broken.loc[7, a.var_names[3]] = "n/a?"
    with pytest.raises(ck.io.ProfileTableError, match=f"{a.var_names[3]}.*row 7"):
        ck.io.from_table(broken)
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    result = runner.invoke(app, ["evaluate", str(path), "--out-dir", str(tmp_path / "ev"), "--no-figures",
                                 "--batch", "", "--preset", "plain"])
    assert result.exit_code == 0, result.output


def test_scores_json_is_valid_with_one_batch(cells_h5ad, tmp_path):
    """One batch: NSCB is undefined and written as null, never NaN."""
    wells = tmp_path / "w.h5ad"
    one = ad.read_h5ad(cells_h5ad)
    one.obs["batch"] = "Week1"
    one.write_h5ad(tmp_path / "one.h5ad")
    assert runner.invoke(app, ["profile", str(tmp_path / "one.h5ad"), "--out", str(wells)]).exit_code == 0
    result = runner.invoke(app, ["evaluate", str(wells), "--out-dir", str(tmp_path / "ev"), "--no-figures"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "ev" / "scores.json").read_text()
    assert "NaN" not in text and json.loads(text)["NSCB"] is None
    assert json.loads(result.stdout.strip().splitlines()[-1])["NSCB"] is None


def test_profile_with_pca_then_evaluate_scores_the_recorded_components(cells_h5ad, tmp_path):
    """--n-comps: the wells keep their features in X and the PCA in obsm['X_profile_pca'], recorded; `cellkit
    evaluate` of those wells aggregates the components, as profile did (same scores as its treatments), also
    after a user ran scanpy's PCA on the file (scanpy's X_pca is a different key)."""
    wells, treatments = tmp_path / "wells.h5ad", tmp_path / "treatments.h5ad"
    result = runner.invoke(app, ["profile", str(cells_h5ad), "--out", str(wells), "--treatments", str(treatments),
                                 "--n-comps", "5"])
    assert result.exit_code == 0, result.output
    w, t = ad.read_h5ad(wells), ad.read_h5ad(treatments)
    assert w.obsm["X_profile_pca"].shape == (44, 5) and w.uns["cellkit"]["pca"]["n_comps"] == 5 and t.n_vars == 5
    assert w.uns["cellkit"]["treatments"]["use_rep"] == "X_profile_pca" and w.n_vars > 5
    direct = evaluate_profiles(t, figures=False)
    sc.pp.pca(w, n_comps=3)  # a user's own PCA of X
    w.write_h5ad(tmp_path / "wells_scanpy.h5ad")
    for k, path in enumerate((wells, tmp_path / "wells_scanpy.h5ad")):
        result = runner.invoke(app, ["evaluate", str(path), "--out-dir", str(tmp_path / f"ev{k}"), "--no-figures"])
        assert result.exit_code == 0 and "in obsm['X_profile_pca']" in " ".join(result.output.split()), result.output
        scores = json.loads(result.stdout.strip().splitlines()[-1])
        assert (scores["NSC"], scores["NSCB"]) == (direct["NSC"], direct["NSCB"])
    result = runner.invoke(app, ["evaluate", str(treatments), "--out-dir", str(tmp_path / "ev2"), "--no-figures"])
    assert result.exit_code == 0, result.output  # treatments hold the components in X: scored as is
    assert json.loads(result.stdout.strip().splitlines()[-1])["NSC"] == direct["NSC"]
