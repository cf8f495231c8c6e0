import anndata as ad
import numpy as np
import pandas as pd
import pytest

import cellkit as ck
from cellkit.pp import ControlError


def _wells(X, plates, compounds, names=None):
    obs = pd.DataFrame({"plate": plates, "compound": compounds})
    obs.index = [f"w{i}" for i in range(len(obs))]
    var = pd.DataFrame(index=names or [f"f{j}" for j in range(np.shape(X)[1])])
    return ad.AnnData(X=np.asarray(X, dtype=np.float32), obs=obs, var=var)


def test_zscore_and_robust_per_plate_against_controls():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3)) * [1, 5, 10] + [0, 100, -50]
    plates = ["A"] * 6 + ["B"] * 6
    compounds = (["DMSO"] * 3 + ["x"] * 3) * 2
    a = _wells(X, plates, compounds)
    z = ck.pp.normalize(a, copy=True)
    for rows in (slice(0, 6), slice(6, 12)):
        ref = X[rows][:3]
        expected = (X[rows] - ref.mean(0)) / ref.std(0, ddof=1)
        np.testing.assert_allclose(z.X[rows], expected, rtol=1e-4, atol=1e-4)
    r = ck.pp.normalize(a, method="robust", copy=True)
    ref = X[:3]
    med = np.median(ref, 0)
    np.testing.assert_allclose(r.X[:6], (X[:6] - med) / (1.4826 * np.median(np.abs(ref - med), 0)), rtol=1e-4)
    assert r.uns["cellkit"]["normalize"]["method"] == "robust"
    assert np.array_equal(a.X, X.astype(np.float32))  # copy=True left the input alone
    c = ck.pp.normalize(a, method="zscore", clip=0.5, copy=True)
    assert np.abs(c.X).max() <= 0.5


def test_normalize_obsm_and_key_added():
    a = _wells(np.ones((4, 2)), ["A"] * 4, ["DMSO", "DMSO", "x", "x"])
    a.obsm["X_emb"] = np.array([[1.0, 0], [3, 0], [5, 1], [7, 2]])
    ck.pp.normalize(a, use_rep="X_emb", key_added="X_emb_norm", method="center")
    np.testing.assert_allclose(a.obsm["X_emb_norm"][:, 0], [-1, 1, 3, 5])
    assert np.array_equal(a.obsm["X_emb"][:, 0], [1, 3, 5, 7])


def test_plate_without_controls_is_an_error():
    a = _wells(np.eye(4), ["A", "A", "B", "B"], ["DMSO", "x", "x", "y"])
    with pytest.raises(ControlError, match=r"1 plate\(s\) have no control rows.*'B'"):
        ck.pp.normalize(a)
    with pytest.raises(ControlError, match="no row matches"):
        ck.pp.normalize(a, control="compound == 'nothing'")
    with pytest.raises(ValueError, match="cannot evaluate control query"):
        ck.pp.normalize(a, control="no_such_column == 1")


def test_constant_controls_and_nan_are_handled():
    X = np.array([[1.0, 5, 1], [1, 6, np.nan], [1, 7, 3], [4, 9, 8]])
    a = _wells(X, ["A"] * 4, ["DMSO"] * 3 + ["x"])
    with pytest.warns(RuntimeWarning, match="zero spread"):
        ck.pp.normalize(a)
    assert np.isfinite(a.X[:, :2]).all()
    np.testing.assert_allclose(a.X[:, 0], [0, 0, 0, 3])  # constant in controls: centred only
    assert np.isnan(a.X[1, 2]) and np.isfinite(a.X[[0, 2, 3], 2]).all()  # NaN stays NaN, stats skip it
    assert a.uns["cellkit"]["normalize"]["zero_scale"] == 1


def test_feature_select_each_rule():
    rng = np.random.default_rng(1)
    n = 300
    base = rng.normal(size=n)
    X = np.column_stack([
        base,                                   # f0 kept
        base * 2 + rng.normal(size=n) * 0.01,   # f1 correlated with f0
        np.ones(n),                             # f2 constant
        np.where(np.arange(n) == 0, 1.0, 0.0),  # f3 near-zero variance (one odd value)
        np.where(np.arange(n) < 75, np.nan, rng.normal(size=n)),  # f4 25% NaN
        rng.normal(size=n),                     # Cells_Location_Center_X: blocklisted
        rng.normal(size=n),                     # f6 kept
    ])
    names = ["f0", "f1", "f2", "f3", "f4", "Cells_Location_Center_X", "f6"]
    a = _wells(X, ["A"] * n, ["x"] * n, names)
    ck.pp.feature_select(a, subset=False)
    reasons = dict(zip(a.var_names, a.var["dropped_by"]))
    assert sorted([reasons.pop("f0"), reasons.pop("f1")]) == ["", "correlation"]  # one of the pair goes
    assert reasons == {"f2": "variance", "f3": "variance", "f4": "nan", "Cells_Location_Center_X": "blocklist",
                       "f6": ""}
    ck.pp.feature_select(a)
    assert len(a.var_names) == 2 and "f6" in a.var_names
    with pytest.raises(ValueError, match="unknown feature_select"):
        ck.pp.feature_select(a, operations=["bogus"])


def test_spherize_whitens_controls():
    rng = np.random.default_rng(2)
    n, d = 400, 5
    mix = rng.normal(size=(d, d))
    X = rng.normal(size=(n, d)) @ mix + 3
    a = _wells(X, ["A"] * n, ["DMSO"] * 300 + ["x"] * 100)
    for method in ("zca", "pca", "zca-cor", "pca-cor"):
        s = ck.pp.spherize(a, method=method, epsilon=1e-9, copy=True)
        ctrl = s.X[:300].astype(float)
        np.testing.assert_allclose(np.cov(ctrl.T), np.eye(d), atol=1e-3)
        np.testing.assert_allclose(ctrl.mean(0), 0, atol=1e-4)
    # ZCA stays closest to the input among whitenings: its features keep their meaning
    z = ck.pp.spherize(a, method="zca", epsilon=1e-9, copy=True)
    corr = [np.corrcoef(z.X[:, j], X[:, j])[0, 1] for j in range(d)]
    assert min(corr) > 0.3
    p = ck.pp.spherize(a, method="pca", n_components=2, copy=True)
    assert p.obsm["X_pca_sphere"].shape == (n, 2) and p.X.shape == (n, d)
    bad = a.copy()
    bad.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="contain NaN"):
        ck.pp.spherize(bad)


def test_l2_normalize_rows():
    a = _wells([[3.0, 4.0], [0.0, 0.0], [1.0, np.nan]], ["A"] * 3, ["DMSO"] * 3)
    ck.pp.l2_normalize(a)
    np.testing.assert_allclose(a.X[0], [0.6, 0.8], rtol=1e-6)
    assert np.array_equal(a.X[1], [0, 0]) and a.X[2, 0] == 1 and np.isnan(a.X[2, 1])


def test_interquartile_mean():
    from cellkit.pp import interquartile_mean

    x = np.array([[1.0, 0], [2, np.nan], [3, 5], [4, 5], [1000, 5], [-1000, np.nan]])
    # column 0: quartiles 1.25 and 3.75 keep 2 and 3; column 1 (NaN ignored: 0, 5, 5, 5): quartiles 3.75, 5 keep the 5s
    np.testing.assert_allclose(interquartile_mean(x), [2.5, 5.0])
    assert np.isnan(interquartile_mean(np.full((3, 1), np.nan)))[0]
    np.testing.assert_allclose(interquartile_mean(np.array([[1.0], [3.0]])), [2.0])  # two values: their mean
    np.testing.assert_allclose(interquartile_mean(x.T, axis=1), interquartile_mean(x))


def test_iqm_normalize_per_plate_on_obsm():
    rng = np.random.default_rng(1)
    plates = ["A"] * 40 + ["B"] * 40
    compounds = (["DMSO"] * 30 + ["x"] * 10) * 2
    emb = rng.normal(size=(80, 4)) * [1, 2, 3, 4] + [0, 10, -10, 3]
    emb[40:] = emb[40:] * 2 + 7  # plate B: another gain and offset
    emb[5] = 1e6  # an outlier control moves a z-score, not the IQM
    a = _wells(np.zeros((80, 1)), plates, compounds)
    a.obsm["X_mae"] = emb
    ck.pp.normalize(a, use_rep="X_mae", method="iqm", key_added="X_mae_iqm")
    out = a.obsm["X_mae_iqm"]
    for rows in (slice(0, 40), slice(40, 80)):
        ref = emb[rows][:30]
        q1, q3 = np.percentile(ref, [25, 75], axis=0)
        center = np.array([ref[(ref[:, j] >= q1[j]) & (ref[:, j] <= q3[j]), j].mean() for j in range(4)])
        np.testing.assert_allclose(out[rows], (emb[rows] - center) / ((q3 - q1) / 1.349), rtol=1e-4, atol=1e-4)
    # both plates' controls end up centred near 0 with unit spread, outlier or not
    ctrl = np.r_[np.arange(30), np.arange(40, 70)]
    ctrl = ctrl[ctrl != 5]
    assert np.abs(np.median(out[ctrl], 0)).max() < 0.4
    assert a.uns["cellkit"]["normalize"]["method"] == "iqm"
    with pytest.raises(ValueError, match="iqm"):
        ck.pp.normalize(a, method="mean")
