import anndata as ad
import numpy as np
import pandas as pd
import pytest

import cellkit as ck

from ._profile_data import planted_cells


@pytest.fixture(scope="module")
def cells():
    a = planted_cells(seed=1)
    a.obsm["X_emb"] = a.X[:, :5] * 2
    a.X[3, 2] = np.nan  # one missing measurement: skipped by the mean/median
    return a


def test_mean_and_median_match_pandas(cells):
    frame = pd.DataFrame(cells.X, columns=cells.var_names).assign(plate=cells.obs.plate.values,
                                                                     well=cells.obs.well.values)
    for func in ("mean", "median"):
        wells = ck.tl.aggregate(cells, func=func, chunk_size=37)
        expected = frame.groupby(["plate", "well"]).agg(func)
        assert list(wells.obs_names) == [f"{p}/{w}" for p, w in expected.index]
        np.testing.assert_allclose(wells.X, expected.to_numpy(), rtol=1e-5, atol=1e-5)
    assert (wells.obs["n_cells"] == 12).all()
    # metadata constant within wells is carried; per-cell columns are not
    assert {"plate", "well", "batch", "compound", "concentration", "moa"} <= set(wells.obs)
    assert "site" not in wells.obs and "label" not in wells.obs
    assert wells.uns["cellkit"]["aggregate"]["func"] == "median"


def test_wells_to_treatments_sums_n_cells_and_masks_varying_metadata(cells):
    wells = ck.tl.aggregate(cells)
    treatments = ck.tl.aggregate(wells, by=["compound", "concentration"])
    assert treatments.obs["n_cells"].sum() == cells.n_obs
    dmso = treatments.obs.loc[treatments.obs.compound == "DMSO"]
    assert len(dmso) == 1 and pd.isna(dmso["batch"].iloc[0])  # DMSO spans batches: batch left missing
    assert treatments.obs.loc[treatments.obs.compound != "DMSO", "batch"].notna().all()


def test_out_of_core_equals_in_memory(cells, tmp_path):
    h5ad, zarr_path = tmp_path / "cells.h5ad", tmp_path / "cells.zarr"
    cells.write_h5ad(h5ad)
    cells.write_zarr(zarr_path)
    for func in ("mean", "median"):
        reference = ck.tl.aggregate(cells, func=func)
        for source in (h5ad, zarr_path, ad.read_h5ad(h5ad, backed="r")):
            got = ck.tl.aggregate(source, func=func, chunk_size=50)
            np.testing.assert_allclose(got.X, reference.X, rtol=1e-6)
            pd.testing.assert_frame_equal(got.obs, reference.obs)
        emb = ck.tl.aggregate(zarr_path, func=func, use_rep="X_emb", chunk_size=50)
        np.testing.assert_allclose(emb.X, ck.tl.aggregate(cells, func=func, use_rep="X_emb").X, rtol=1e-6)
    assert list(emb.var_names[:2]) == ["X_emb_0", "X_emb_1"]


def test_aggregate_bad_inputs(cells, tmp_path):
    with pytest.raises(KeyError, match="no column"):
        ck.tl.aggregate(cells, by=["plate", "row"])
    with pytest.raises(ValueError, match="func must be"):
        ck.tl.aggregate(cells, func="max")
    with pytest.raises(FileNotFoundError):
        ck.tl.aggregate(tmp_path / "missing.h5ad")
