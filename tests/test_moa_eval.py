"""NSC / NSCB rules, mAP against copairs, LOCO, on small hand-built profiles."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import cellkit as ck


def _profiles(rows, X):
    obs = pd.DataFrame(rows, columns=["name", "moa", "compound", "batch"]).set_index("name")
    return ad.AnnData(X=np.asarray(X, dtype=np.float32), obs=obs)


def test_same_compound_and_same_batch_are_not_neighbours():
    # a1's nearest profile overall is its own compound (a1b), then b1 (other MOA, same batch), then a2.
    a = _profiles([("a1", "A", "a", "w1"), ("a1b", "A", "a", "w1"), ("b1", "B", "b", "w1"),
                   ("a2", "A", "c", "w2"), ("b2", "B", "d", "w2")],
                  [[1, 0, 0], [1, 0.01, 0], [0.9, 0.3, 0], [0.7, 0.7, 0], [0, 1, 0]])
    r = ck.tl.moa_accuracy(a)
    t = r.table
    assert t.loc["a1", "nsc_neighbor"] == "b1" and t.loc["a1", "nsc_correct"] == False  # noqa: E712
    assert t.loc["a1", "nscb_neighbor"] == "a2" and bool(t.loc["a1", "nscb_correct"])
    assert t.loc["b1", "nscb_neighbor"] in ("a2", "b2")
    assert r.n_nsc == 5 and r.n_nscb == 5
    expected_nsc = np.mean(t["nsc_predicted"] == t["label"])
    assert r.nsc == pytest.approx(expected_nsc)
    assert a.uns["moa_accuracy"]["NSC"] == pytest.approx(r.nsc)


def test_profiles_without_a_valid_neighbour_are_excluded_and_reported():
    # MOA K lives in one batch only: no same-MOA profile of another batch -> excluded from NSCB.
    # MOA S has a single compound: excluded from both.
    a = _profiles([("k1", "K", "k1", "w1"), ("k2", "K", "k2", "w1"), ("s1", "S", "s", "w1"),
                   ("s1b", "S", "s", "w2"), ("m1", "M", "m1", "w1"), ("m2", "M", "m2", "w2")],
                  [[0, 1, 0, 0], [0, 1, 0.1, 0], [0, 0, 1, 0], [0, 0, 1, 0.1], [1, 0, 0, 0.2], [1, 0, 0, 0]])
    r = ck.tl.moa_accuracy(a)
    assert r.excluded["nsc"] == ["s1", "s1b"]
    assert set(r.excluded["nscb"]) == {"k1", "k2", "s1", "s1b"}
    assert r.n_nsc == 4 and r.n_nscb == 2
    assert r.table.loc[["s1", "s1b"], "nsc_correct"].isna().all()
    assert r.table.loc[["m1", "m2"], "nscb_neighbor"].tolist() == ["m2", "m1"]
    # excluded profiles still get a neighbour in the table, but no verdict
    assert r.table.loc["k1", "nscb_neighbor"] in ("s1b", "m2") and pd.isna(r.table.loc["k1", "nscb_correct"])
    assert r.nscb == 1.0
    assert set(r.per_label("nscb").index) == {"M"}


def test_ties_go_to_the_first_profile_in_obs_order():
    # q is exactly as similar to x (MOA B) and y (MOA A); x comes first -> q is wrong.
    rows = [("q", "A", "q", "w1"), ("x", "B", "x", "w2"), ("y", "A", "y", "w2")]
    X = [[1, 0], [1, 1], [1, -1]]
    r = ck.tl.moa_accuracy(_profiles(rows, X))
    assert r.table.loc["q", "nsc_neighbor"] == "x" and not r.table.loc["q", "nsc_correct"]
    r = ck.tl.moa_accuracy(_profiles([rows[0], rows[2], rows[1]], [X[0], X[2], X[1]]))
    assert r.table.loc["q", "nsc_neighbor"] == "y" and r.table.loc["q", "nsc_correct"]


def test_controls_and_unlabelled_rows_are_left_out():
    a = _profiles([("d", "DMSO", "DMSO", "w1"), ("u", None, "u", "w1"), ("a1", "A", "a1", "w1"),
                   ("a2", "A", "a2", "w2"), ("b1", "B", "b1", "w1"), ("b2", "B", "b2", "w2")],
                  [[1, 0], [1, 0.1], [1, 0.2], [1, 0.3], [-1, 1], [-1, 1.2]])
    r = ck.tl.moa_accuracy(a, control="compound == 'DMSO'")
    assert "d" not in r.table.index and "u" not in r.table.index and r.unlabelled == ["u"]
    assert r.nsc == 1.0 and r.nscb == 1.0
    conf = r.confusion()
    assert conf.loc["A", "A"] == 2 and conf.to_numpy().sum() == 4


def test_bad_inputs_give_clear_errors():
    a = _profiles([("a1", "A", "a", "w1"), ("b1", "B", "b", "w2")], [[1, 0], [0, 1]])
    with pytest.raises(KeyError, match="label column 'mechanism'"):
        ck.tl.moa_accuracy(a, label="mechanism")
    with pytest.raises(KeyError, match="batch column 'plate_batch'"):
        ck.tl.moa_accuracy(a, batch="plate_batch")
    nan = a.copy()
    nan.X[0, 1] = np.nan
    with pytest.raises(ValueError, match="contain NaN"):
        ck.tl.moa_accuracy(nan)
    zero = a.copy()
    zero.X[0] = 0
    with pytest.raises(ValueError, match="all zeros"):
        ck.tl.moa_accuracy(zero)
    r = ck.tl.moa_accuracy(a, batch=None)
    assert r.nscb is None and "nscb_neighbor" not in r.table


def test_mean_average_precision_matches_copairs():
    copairs_ap = pytest.importorskip("copairs.map").average_precision
    rng = np.random.default_rng(3)
    moas = np.repeat(["A", "B", "C", "D"], 6)
    compounds = [f"{m}{i // 2}" for m, i in zip(moas, np.tile(np.arange(6), 4))]
    centres = rng.normal(size=(4, 8))
    X = centres[np.repeat(np.arange(4), 6)] + rng.normal(size=(24, 8)) * 1.5
    obs = pd.DataFrame({"moa": moas, "compound": compounds, "batch": "w"}, index=[f"p{i}" for i in range(24)])
    a = ad.AnnData(X=X.astype(np.float32), obs=obs)
    result = ck.tl.mean_average_precision(a)
    ours, table = result.score, result.table
    assert a.uns["mean_average_precision"]["mAP"] == pytest.approx(ours)  # the summary is written like moa_accuracy's
    assert a.uns["mean_average_precision"]["n_queries"] == 24
    ref = copairs_ap(obs.reset_index(drop=True), a.X, pos_sameby=["moa"], pos_diffby=["compound"],
                     neg_sameby=[], neg_diffby=["moa"], progress_bar=False)
    np.testing.assert_allclose(table["average_precision"].to_numpy(), ref["average_precision"].to_numpy(), atol=1e-6)
    np.testing.assert_array_equal(table["n_pos_pairs"].to_numpy(), ref["n_pos_pairs"].to_numpy())
    np.testing.assert_array_equal(table["n_total_pairs"].to_numpy(), ref["n_total_pairs"].to_numpy())
    assert ours == pytest.approx(ref["average_precision"].mean())
    assert 0.3 < ours < 1.0


def test_loco_classification_on_planted_structure():
    rng = np.random.default_rng(4)
    moas = np.repeat(["A", "B", "C"], 8)
    compounds = [f"{m}{i // 4}" for m, i in zip(moas, np.tile(np.arange(8), 3))]
    X = np.eye(3)[np.repeat(np.arange(3), 8)] * 3 + rng.normal(size=(24, 3)) * 0.3
    obs = pd.DataFrame({"moa": moas, "compound": compounds}, index=[f"p{i}" for i in range(24)])
    a = ad.AnnData(X=X.astype(np.float32), obs=obs)
    for clf in ("logistic", "centroid"):
        result = ck.tl.loco_classification(a, classifier=clf, key_added=f"loco_{clf}")
        assert result.score == 1.0 and result.table["predicted"].notna().all()
        assert a.uns[f"loco_{clf}"] == {"accuracy": 1.0, "classifier": clf, "n_profiles": 24, "n_predicted": 24}
    # a label held by one compound only cannot be predicted: left out
    a.obs.loc[a.obs.compound == "C1", "moa"] = "Z"
    result = ck.tl.loco_classification(a, classifier="centroid", key_added=None)
    acc, table = result.score, result.table
    assert "loco_classification" not in a.uns
    assert table.loc[a.obs.compound == "C1", "predicted"].isna().all() and acc == 1.0
