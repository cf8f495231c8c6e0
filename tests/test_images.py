"""Whole-image embeddings: tiles of fields, embed_images (cellkit models and a local ViT-MAE),
image-level robustness (the perturbed embedding comes from the perturbed pixels), CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cellkit.cli import app
from cellkit.datasets import synthetic_index
from cellkit.io.cells import open_cells, read_cells, read_obs
from cellkit.models import embed_cells, train
from cellkit.models.images import embed_images, field_tiles, mean_by_field, write_tiles
from cellkit.models.perturb import perturb

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(small_plate, tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    index = synthetic_index(small_plate).head(6)
    tiles = write_tiles(index, root / "tiles.zarr", size=32, scale=0.25)
    model = train(tiles, root / "pca", method="pca", config={"input_size": 32, "n_components": 8})
    return index, tiles, model


def test_field_tiles_policies():
    rng = np.random.default_rng(0)
    field = rng.random((2, 100, 130)).astype(np.float32)
    x, pos = field_tiles(field, size=32, policy="tile")
    assert x.shape == (4 * 5, 2, 32, 32) and pos[-1].tolist() == [100 - 32, 130 - 32]
    np.testing.assert_array_equal(x[7], field[:, pos[7, 0]:pos[7, 0] + 32, pos[7, 1]:pos[7, 1] + 32])
    covered = np.zeros((100, 130), bool)
    for y, x0 in pos:
        covered[y:y + 32, x0:x0 + 32] = True
    assert covered.all()
    x, _ = field_tiles(field, size=32, policy="tile", scale=0.5)
    assert x.shape == (2 * 3, 2, 32, 32)
    x, pos = field_tiles(np.ones((1, 100, 130)), size=16, policy="resize")
    assert x.shape == (1, 1, 16, 16) and np.allclose(x, 1)
    with pytest.raises(ValueError, match="policy"):
        field_tiles(field, size=8, policy="crop")
    with pytest.raises(ValueError, match="scale"):
        field_tiles(field, size=8, scale=2)


def test_write_tiles_store(setup):
    index, tiles, _ = setup
    root = open_cells(tiles)
    obs = read_obs(root)
    assert list(root.attrs["channels"]) == ["DNA", "Tubulin", "Actin"] and root.attrs["policy"] == "tile"
    assert obs.field_id.nunique() == 6 and set(obs.field_id) == set(index.field_id)
    per_field = obs.groupby("field_id").size()
    assert (per_field == 6).all()  # 256 x 320 scaled by 0.25 = 64 x 80: 2 x 3 tiles of 32
    assert obs.cell_id.is_unique


def test_embed_images_is_the_mean_of_its_tiles(setup):
    index, tiles, model = setup
    images = embed_images(index, model, size=32, scale=0.25)
    assert images.n_obs == 6 and list(images.obs_names) == list(index.field_id)
    z = images.obsm["X_pixel_pca"]
    assert z.shape == (6, 8) and z.dtype == np.float32
    tile_z, _ = embed_cells(tiles, model)
    expected, ids = mean_by_field(tile_z, read_obs(open_cells(tiles)).field_id.to_numpy())
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-5)
    info = images.uns["cellkit"]["embeddings"]["X_pixel_pca"]
    assert info["policy"] == "tile" and info["scale"] == 0.25 and info["method"] == "pixel_pca"
    assert (images.obs["n_tiles"] == 6).all() and images.obs.loc[index.field_id[0], "plate"] == index.plate[0]


def test_embed_images_hf_local_and_missing(small_plate, tmp_path):
    transformers = pytest.importorskip("transformers")
    from cellkit.models.hf import MissingModelError

    config = transformers.ViTMAEConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=16,
                                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                       decoder_hidden_size=8, decoder_num_hidden_layers=1,
                                       decoder_num_attention_heads=2, decoder_intermediate_size=16)
    torch.manual_seed(0)
    transformers.ViTMAEModel(config).save_pretrained(tmp_path / "mae")
    index = synthetic_index(small_plate).head(4)
    images = embed_images(index, f"hf:{tmp_path / 'mae'}")
    assert images.obsm["X_mae"].shape == (4, 16) and images.uns["cellkit"]["embeddings"]["X_mae"]["policy"] == "resize"
    per_channel = embed_images(index, f"hf:{tmp_path / 'mae'}", channel_mode="per-channel", pool="cls", key_added="X_c")
    assert per_channel.obsm["X_c"].shape == (4, 48)
    with pytest.raises(MissingModelError, match="without the network"):
        embed_images(index, f"hf:{tmp_path / 'absent'}")


def test_image_robustness_uses_the_perturbed_pixels(setup):
    """The drift is computed from embeddings of the perturbed images (the MAE-embeddings notebook's
    'noisy' embedding came from the clean input, so its drift was 0)."""
    from cellkit.tl import robustness

    _, tiles, _ = setup
    embed = lambda x: torch.cat([x.mean(dim=(2, 3)), x[:, :, ::8, ::8].flatten(1)], 1).numpy()  # noqa: E731
    res = robustness(tiles, {"pix": embed}, perturbations={"noise": [0.5], "blur": [2.0], "brightness": [1.0]},
                     groupby="field_id", k=2, seed=3, batch_size=5)
    images, _, obs = read_cells(tiles)
    x = torch.from_numpy(np.asarray(images.compute(), np.float32))
    std = res.params["channel_std"]
    codes = obs.field_id.astype(str).to_numpy()
    for name, sev in (("noise", 0.5), ("blur", 2.0), ("brightness", 1.0)):
        parts = [perturb(x[s:s + 5], name, sev, scale=std, seed=3, offset=s) for s in range(0, len(x), 5)]
        expected, _ = mean_by_field(embed(torch.cat(parts)), codes)
        np.testing.assert_allclose(res.embeddings["pix"][(name, sev)], expected, rtol=1e-4, atol=1e-3)
        assert not np.allclose(res.embeddings["pix"][(name, sev)], res.embeddings["pix"][("clean", 0.0)])
    row = res.table[(res.table.perturbation == "noise")].iloc[0]
    assert row.cosine_drift_mean > 0 and len(res.obs) == 6
    clean = res.table[res.table.perturbation == "clean"].iloc[0]
    assert clean.cosine_drift_mean == pytest.approx(0, abs=1e-6)


def test_cli_tiles_embed_images_and_robustness(setup, small_plate, tmp_path):
    import anndata as ad

    from cellkit.io import write_index

    index, _, model = setup
    write_index(index, tmp_path / "index.parquet")
    runner = CliRunner()
    res = runner.invoke(app, ["tiles", str(tmp_path / "index.parquet"), "--out", str(tmp_path / "t.zarr"),
                              "--size", "32", "--scale", "0.25"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["embed-images", str(tmp_path / "index.parquet"), "--model", str(model), "--out",
                              str(tmp_path / "images.h5ad"), "--scale", "0.25"])
    assert res.exit_code == 0, res.output
    assert ad.read_h5ad(tmp_path / "images.h5ad").obsm["X_pixel_pca"].shape == (6, 8)
    res = runner.invoke(app, ["image-report", str(tmp_path / "images.h5ad"), "--use-rep", "X_pixel_pca", "--out",
                              str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    sim = pd.read_csv(tmp_path / "report" / "cosine_similarity.csv", index_col=0)
    assert sim.shape == (6, 6) and np.allclose(np.diag(sim), 1)
    normed = ad.read_h5ad(tmp_path / "report" / "images_iqm.h5ad")
    z = normed.obsm["X_pixel_pca_iqm"]
    from cellkit.pp import interquartile_mean

    assert np.allclose(interquartile_mean(z), 0, atol=1e-4)  # IQM of the references (all rows) is 0
    assert (tmp_path / "report" / "tsne.png").exists() and normed.obsm["X_tsne"].shape == (6, 2)
    res = runner.invoke(app, ["search", str(tmp_path / "images.h5ad"), index.field_id[0], "--use-rep", "X_pixel_pca",
                              "--k", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["robustness", str(tmp_path / "t.zarr"), "--model", str(model), "--out",
                              str(tmp_path / "rob"), "--groupby", "field_id", "--k", "2", "-p", "blur", "--no-umap"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "rob" / "robustness.csv")
    assert (table[table.perturbation == "blur"].cosine_drift_mean > 0).all()
    assert (tmp_path / "rob" / "tsne_pairs_pixel_pca.png").exists()
    res = runner.invoke(app, ["embed-images", str(tmp_path / "index.parquet"), "--model", "hf:/nonexistent/mae",
                              "--out", str(tmp_path / "x.h5ad")])
    assert res.exit_code != 0 and "without the network" in res.output
