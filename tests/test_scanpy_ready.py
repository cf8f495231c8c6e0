"""cells.h5ad, wells.h5ad and treatments.h5ad go into scanpy with no glue: X NaN-free, scanpy's X_pca left free."""

import anndata as ad
import matplotlib
import numpy as np
import pytest
from typer.testing import CliRunner

from cellkit.cli import app
from cellkit.datasets import synthetic_index, write_ground_truth_labels
from cellkit.extract import extract_cells
from cellkit.models import embed_h5ad, train

from .extract_helpers import OPTIONS, measure_area_intensity

matplotlib.use("Agg")


def measure_with_undefined(images, nuclei, cells, channels):
    """The extraction test double plus a feature undefined (NaN) for every third cell, as CellProfiler's
    texture or Zernike features are for tiny objects."""
    from scipy import ndimage as ndi

    table = measure_area_intensity(images, nuclei, cells, channels)
    labels = table.index.to_numpy()
    for c, channel in enumerate(channels):  # more features, so that PCA has room after feature selection
        image = images[c].astype(float)
        table[f"Nuclei_Intensity_MeanIntensity_{channel}"] = ndi.mean(image, nuclei, labels)
        table[f"Cells_Intensity_StdIntensity_{channel}"] = ndi.standard_deviation(image, cells, labels)
        table[f"Cells_Intensity_MaxIntensity_{channel}"] = ndi.maximum(image, cells, labels)
    table["Cells_AreaShape_Area"] = ndi.sum_labels(np.ones(cells.shape), cells, labels)
    ratio = table["Cells_Intensity_MeanIntensity_Tubulin"] / table["Cells_Intensity_MeanIntensity_DNA"]
    ratio[table.index % 3 == 0] = np.nan
    table["Cells_Intensity_Ratio_TubulinDNA"] = ratio.astype(np.float32)
    return table


@pytest.fixture(scope="module")
def outputs(small_plate, tmp_path_factory):
    root = tmp_path_factory.mktemp("scanpy")
    labels = root / "labels.zarr"
    write_ground_truth_labels(small_plate, labels)
    cells = root / "cells.zarr"
    extract_cells(synthetic_index(small_plate), labels, cells, measure=measure_with_undefined, workers=1, **OPTIONS)
    h5ad = cells.with_suffix(".h5ad")
    train(cells, root / "pixel_pca", method="pixel_pca", config={"input_size": 32, "n_components": 8})
    embed_h5ad(cells, root / "pixel_pca", h5ad)
    result = CliRunner().invoke(app, ["profile", str(h5ad), "--out", str(root / "wells.h5ad"),
                                      "--treatments", str(root / "treatments.h5ad")])
    assert result.exit_code == 0, result.output
    return root


def test_cells_h5ad_is_nan_free_with_imputation_counts(outputs):
    cells = ad.read_h5ad(outputs / "cells.h5ad")
    assert not np.isnan(cells.X).any()
    undefined = (cells.obs["label"] % 3 == 0).to_numpy()
    assert undefined.any() and (cells.obs["n_imputed"].to_numpy() == undefined).all()
    assert cells.var.loc["Cells_Intensity_Ratio_TubulinDNA", "n_imputed"] == undefined.sum()
    assert cells.uns["cellkit"]["impute"]["n_values"] == undefined.sum()
    # the pixel PCA has its own key; scanpy's X_pca is free
    assert cells.obsm["X_pixel_pca"].shape == (cells.n_obs, 8) and "X_pca" not in cells.obsm


@pytest.mark.parametrize("name", ["cells.h5ad", "wells.h5ad", "treatments.h5ad"])
def test_scanpy_runs_as_is(outputs, name):
    import matplotlib.pyplot as plt
    import scanpy as sc

    adata = ad.read_h5ad(outputs / name)
    pixel = adata.obsm["X_pixel_pca"].copy() if "X_pixel_pca" in adata.obsm else None
    sc.pp.pca(adata, n_comps=min(5, adata.n_vars - 1, adata.n_obs - 1))
    sc.pp.neighbors(adata, n_neighbors=min(5, adata.n_obs - 1))
    sc.tl.umap(adata, random_state=0)
    sc.pl.umap(adata, color="moa", show=False)
    plt.close("all")
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2) and np.isfinite(adata.obsm["X_umap"]).all()
    if pixel is not None:  # sc.pp.pca did not overwrite the pixel PCA
        np.testing.assert_array_equal(adata.obsm["X_pixel_pca"], pixel)
