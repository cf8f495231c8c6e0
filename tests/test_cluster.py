"""`ck.tl.cluster`: keys for everything it writes, copy, numeric cluster order; the use_rep convention."""

import anndata as ad
import numpy as np
import pytest

import cellkit as ck


def _blobs(n_groups=12, per=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, 10)) * 8
    X = centres[np.repeat(np.arange(n_groups), per)] + rng.normal(size=(n_groups * per, 10))
    return ad.AnnData(X=X.astype(np.float32))


def test_cluster_copy_and_keys():
    a = _blobs()
    b = ck.tl.cluster(a, copy=True, key_added="cl", pca_key="X_pca_morph", neighbors_key="nn", umap_key="X_umap_morph",
                      n_neighbors=10)
    assert a.obs.shape[1] == 0 and not a.obsm and not a.obsp  # the input is untouched
    assert {"X_pca_morph", "X_umap_morph"} <= set(b.obsm) and {"nn_distances", "nn_connectivities"} <= set(b.obsp)
    assert b.uns["cellkit"]["cluster"]["pca_key"] == "X_pca_morph"
    cats = list(b.obs["cl"].cat.categories)
    assert len(cats) >= 11 and cats == sorted(cats, key=int)  # 0, 1, 2, ..., 10, 11: not 0, 1, 10, 11, 2
    assert ck.tl.cluster(a, n_neighbors=10) is None and "leiden" in a.obs and "X_pca" in a.obsm


def test_use_rep_x_means_x():
    a = _blobs(n_groups=3)
    a.obsm["X_emb"] = a.X[:, :4] * 2
    np.testing.assert_array_equal(ck.get.get_rep(a, "X"), ck.get.get_rep(a, None))
    a.obs["g"] = np.repeat(["p", "q", "r"], 20)
    np.testing.assert_array_equal(ck.tl.aggregate(a, by="g", use_rep="X").X, ck.tl.aggregate(a, by="g").X)
    with pytest.raises(KeyError, match="obsm has no 'X_nope'"):
        ck.get.get_rep(a, "X_nope")
    hits = ck.tl.search(a, a.obs_names[0], use_rep=None, k=3)
    assert hits.equals(ck.tl.search(a, a.obs_names[0], use_rep="X", k=3))


def test_umap_grid_legends_order_and_title():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    a = _blobs()
    a.obs["compound"] = pd.Categorical([f"c{i % 25}" for i in range(a.n_obs)])  # 25 > the 20 colours
    a.obs["dose"] = np.arange(a.n_obs, dtype=float)
    ck.tl.cluster(a, n_neighbors=10)
    fig = ck.pl.umap(a, color=["leiden", "compound", "dose"])
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(shown) == 3 and fig.axes[0].get_position().y0 > fig.axes[2].get_position().y1  # a 2-column grid
    order = [t.get_text() for t in shown[0].get_legend().get_texts()]
    assert order == sorted(order, key=int) and len(order) >= 11
    assert shown[1].get_legend() is None and "too many for a legend" in shown[1].texts[0].get_text()
    assert fig._suptitle.get_text().startswith("UMAP of PCA of X (") and "cells" in fig._suptitle.get_text()
    plt.close(fig)
