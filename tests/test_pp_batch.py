"""ck.pp.combat, ck.pp.harmony, ck.pp.position_correct, ck.pp.impute and the corrections in prepare_profiles."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import cellkit as ck
from cellkit.workflows.profiles import CORRECTIONS, DEFAULT, prepare_profiles


def _batched(seed=0, n=60, d=8):
    """Two groups (A/B) crossed with two batches; batch 1 is shifted by +5 in every feature."""
    rng = np.random.default_rng(seed)
    group = np.repeat(["A", "B"], n // 2)
    batch = np.tile(["b0", "b1"], n // 2)
    X = rng.normal(size=(n, d)) + np.where(group == "A", 0.0, 3.0)[:, None] + np.where(batch == "b1", 5.0, 0.0)[:, None]
    obs = pd.DataFrame({"group": group, "batch": batch}, index=[f"r{i}" for i in range(n)])
    return ad.AnnData(X=X.astype(np.float32), obs=obs)


def test_combat_removes_a_batch_shift_and_keeps_groups():
    a = _batched()
    ck.pp.combat(a, key="batch")
    b1 = (a.obs.batch == "b1").to_numpy()
    assert np.abs(a.X[b1].mean(0) - a.X[~b1].mean(0)).max() < 0.5  # was 5
    A = (a.obs.group == "A").to_numpy()
    assert (a.X[~A].mean(0) - a.X[A].mean(0)).min() > 2  # the group difference (3) survives
    assert a.uns["cellkit"]["combat"]["n_batches"] == 2
    with pytest.raises(KeyError, match="'week'"):
        ck.pp.combat(a, key="week")
    one = _batched()
    one.obs["batch"] = "b0"
    with pytest.raises(ValueError, match="one value"):
        ck.pp.combat(one)


def test_harmony_mixes_batches_in_its_own_key():
    rng = np.random.default_rng(1)
    group, batch = np.repeat(list("ABCD"), 50), np.tile(["b0", "b1"], 100)
    X = (rng.normal(size=(200, 10)) + 3 * rng.normal(size=(4, 10))[pd.factorize(group)[0]]
         + (batch == "b1")[:, None] * 2 * rng.normal(size=10))
    a = ad.AnnData(X=X.astype(np.float32), obs=pd.DataFrame({"group": group, "batch": batch},
                                                            index=[f"r{i}" for i in range(200)]))
    ck.pp.harmony(a, key="batch", n_comps=5)
    Z = a.obsm["X_harmony"]
    assert Z.shape == (a.n_obs, 5) and Z.dtype == np.float32 and "X_pca" not in a.obsm
    b1 = batch == "b1"
    pcs = ck.pp.harmony(a, key="batch", n_comps=5, key_added="again", copy=True).obsm["again"]
    np.testing.assert_array_equal(pcs, Z)  # seeded
    before = np.linalg.norm(X[b1].mean(0) - X[~b1].mean(0))
    after = np.linalg.norm(Z[b1].mean(0) - Z[~b1].mean(0))
    groups = np.linalg.norm(Z[group == "A"].mean(0) - Z[group == "B"].mean(0))
    assert after < 0.3 * before and groups > 3 * after


def test_position_correct_removes_row_and_column_effects():
    rng = np.random.default_rng(2)
    wells = [f"{r}{c:02d}" for r in "BCDEFG" for c in range(2, 12)]
    plates = np.repeat(["p1", "p2", "p3"], len(wells))
    well = np.tile(wells, 3)
    row_effect = {r: 2.0 * i for i, r in enumerate("BCDEFG")}
    X = rng.normal(size=(len(well), 3)) * 0.1
    X[:, 0] += [row_effect[w[0]] + 0.5 * int(w[1:]) for w in well]
    a = ad.AnnData(X=X.astype(np.float32), obs=pd.DataFrame({"plate": plates, "well": well},
                                                            index=[f"{p}/{w}" for p, w in zip(plates, well)]))
    ck.pp.position_correct(a)
    assert a.X[:, 0].std() < 0.2 and a.X[:, 1].std() < 0.2  # 4.7 before
    bad = a.copy()
    bad.obs["well"] = bad.obs["well"].astype(str)
    bad.obs.iloc[4, bad.obs.columns.get_loc("well")] = "middle"
    with pytest.raises(ValueError, match="'middle'"):
        ck.pp.position_correct(bad)


def test_impute_fills_nan_by_the_plate_control_median_and_counts():
    X = np.array([[1, 10], [3, np.nan], [np.nan, 30], [100, 1], [200, 2], [np.nan, np.nan]], dtype=np.float32)
    obs = pd.DataFrame({"plate": ["p", "p", "p", "q", "q", "q"],
                        "compound": ["DMSO", "DMSO", "x", "DMSO", "DMSO", "x"]}, index=list("abcdef"))
    a = ad.AnnData(X=X, obs=obs)
    ck.pp.impute(a, control="compound == 'DMSO'")
    np.testing.assert_allclose(a.X, [[1, 10], [3, 10], [2, 30], [100, 1], [200, 2], [150, 1.5]])
    assert list(a.obs["n_imputed"]) == [0, 1, 1, 0, 0, 2] and list(a.var["n_imputed"]) == [2, 2]
    assert a.uns["cellkit"]["impute"]["n_values"] == 4


def test_prepare_profiles_corrections_run_and_record():
    from tests._profile_data import planted_cells

    wells = ck.tl.aggregate(planted_cells(seed=5, cells_per_well=3), by=("plate", "well"))
    for correct in CORRECTIONS:
        t = prepare_profiles(wells, **DEFAULT, correct=correct)
        assert not np.isnan(t.X).any() and t.n_obs == 17, correct
    assert "combat" in prepare_profiles(wells, **DEFAULT, correct="combat").uns["cellkit"]
    with pytest.raises(ValueError, match="correct must be one of"):
        prepare_profiles(wells, correct="magic")


def test_pca_is_scikit_learns_pca_seeded_clamped_and_recorded():
    from sklearn.decomposition import PCA

    a = _batched(seed=3, n=30, d=12)
    ck.pp.pca(a, n_comps=4)
    Z = a.obsm["X_pca"]
    ref = PCA(n_components=4, random_state=0).fit_transform(a.X.astype(np.float64))
    for j in range(4):  # the same components up to sign
        sign = np.sign(Z[:, j] @ ref[:, j])
        np.testing.assert_allclose(sign * Z[:, j], ref[:, j], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(Z, ck.pp.pca(a, n_comps=4, copy=True).obsm["X_pca"])  # seeded
    rec = a.uns["cellkit"]["pca"]
    assert (rec["n_comps"], rec["n_comps_asked"], rec["key_added"]) == (4, 4, "X_pca")
    ck.pp.pca(a, n_comps=500, use_rep="X_pca")  # clamped to min(rows, features) - 1 = 3
    assert a.obsm["X_pca_pca"].shape == (30, 3) and a.uns["cellkit"]["pca"]["n_comps"] == 3
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="n_comps must be an integer >= 1"):
            ck.pp.pca(a, n_comps=bad)


def test_prepare_profiles_pca_step_feeds_unit_length_treatments_and_harmony():
    from tests._profile_data import planted_cells

    wells = ck.tl.aggregate(planted_cells(seed=5, cells_per_well=3), by=("plate", "well"))
    t = prepare_profiles(wells, **{**DEFAULT, "n_comps": 6, "l2": True})
    assert t.shape == (17, 6) and {"pca", "l2_normalize"} <= set(t.uns["cellkit"])
    w = prepare_profiles(wells, **{**DEFAULT, "n_comps": 6, "l2": True}, treatment=())
    np.testing.assert_allclose(np.linalg.norm(w.obsm["X_profile_pca"], axis=1), 1.0, rtol=1e-5)  # unit length
    assert w.n_vars > 6 and w.var["feature_selected"].all()  # X keeps the (selected, spherized) features
    h = prepare_profiles(wells, **{**DEFAULT, "n_comps": 6}, correct="harmony")
    assert h.shape == (17, 6) and h.uns["cellkit"]["harmony"]["use_rep"] == "X_profile_pca"
