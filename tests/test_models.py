import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cellkit.cli import app
from cellkit.io.cells import write_cells
from cellkit.models import (AugmentConfig, ChannelMismatchError, CellChunks, ConvAutoencoder, IncompleteModelError,
                            ResNetEncoder, augment, byol_loss, center_crop, default_config, embed, embed_cells,
                            iter_batches, load_model, nt_xent, obs_adata, train)
from cellkit.models.checkpoint import load_checkpoint

from .conftest import real_path

torch.set_num_threads(1)
CHANNELS = ["DNA", "Tubulin", "Actin"]
# A tiny model: trains in well under a second per epoch on one core.
TINY = {"epochs": 2, "batch_size": 16, "width": 4, "blocks": [1, 1], "proj_hidden": 16, "proj_dim": 8,
        "latent_dim": 8, "ae_depth": 2, "input_size": 16, "n_components": 5, "num_workers": 0, "shuffle_cells": 64}


def _store(path, n=96, size=20, channels=CHANNELS, seed=0, chunk=32):
    """Crops of two kinds of cells (bright/dim DNA blob) with obs like the extraction's."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    blob = np.exp(-(yy ** 2 + xx ** 2) / (2 * 3.0 ** 2))
    kind = np.arange(n) % 2
    images = rng.poisson(50, (n, len(channels), size, size)).astype(np.float64)
    images[:, 0] += blob * np.where(kind, 2000, 500)[:, None, None]
    images[:, 1:] += 300 * rng.random((n, len(channels) - 1, 1, 1))
    obs = pd.DataFrame({"cell_id": [f"P1/B0{k % 4 + 2}/1/{k + 1}" for k in range(n)], "plate": "P1",
                        "well": [f"B0{k % 4 + 2}" for k in range(n)], "compound": np.where(kind, "taxol", "DMSO")})
    write_cells(path, images.astype(np.uint16), np.ones((n, 2, size, size), bool), obs, channels=list(channels),
                chunk_cells=chunk)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("cells") / "cells.zarr")


# losses ------------------------------------------------------------------------------------------------------

def test_nt_xent_values():
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    other = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    assert nt_xent(z, z + 0.01 * other) < nt_xent(z, other)
    # all views identical: every one of the 2B - 1 candidates is equally likely
    same = torch.ones(4, 3)
    assert nt_xent(same, same, 0.5).item() == pytest.approx(math.log(7), abs=1e-5)
    # two orthogonal pairs, temperature 1: positive logit 1, the two others 0
    e = torch.eye(2)
    assert nt_xent(e, e, 1.0).item() == pytest.approx(-math.log(math.e / (math.e + 2)), abs=1e-5)
    with pytest.raises(ValueError):
        nt_xent(torch.ones(4, 3), torch.ones(5, 3))


def test_byol_loss_values():
    p = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    assert byol_loss(p, 3 * p).item() == pytest.approx(0, abs=1e-6)  # scale does not matter
    assert byol_loss(p, -p).item() == pytest.approx(4, abs=1e-5)
    unrelated = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    assert 0 < byol_loss(p, unrelated).item() < 4


# augmentations -----------------------------------------------------------------------------------------------

def test_augment_shapes_and_determinism():
    x = torch.randn(5, 4, 20, 20)
    cfg = AugmentConfig(channel_dropout=0.3)
    a = augment(x, cfg, 16, torch.Generator().manual_seed(3))
    b = augment(x, cfg, 16, torch.Generator().manual_seed(3))
    c = augment(x, cfg, 16, torch.Generator().manual_seed(4))
    assert a.shape == (5, 4, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.allclose(a, c)


def _off(**on):
    return AugmentConfig(**{"crop_scale": None, "flips": False, "rot90": False, "brightness": 0.0, "contrast": 0.0,
                            "blur_prob": 0.0, "noise_std": 0.0, **on})


def test_geometric_is_exact_on_pixels():
    x = torch.randn(3, 2, 20, 20)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(augment(x, _off(), 16, g), center_crop(x, 16), atol=1e-5)
    out = augment(x, _off(rot90=True, flips=True), 16, g)
    crop = center_crop(x, 16)
    for i in range(3):  # each crop is one of the 8 symmetries of the centre crop
        views = [torch.rot90(v, k, (1, 2)) for v in (crop[i], crop[i].flip(2)) for k in range(4)]
        assert any(torch.allclose(out[i], v, atol=1e-4) for v in views)


def test_photometric_per_channel():
    x = torch.zeros(4, 3, 16, 16)
    out = augment(x, _off(brightness=0.5), 16, torch.Generator().manual_seed(0))
    shifts = out[:, :, 0, 0]
    assert torch.allclose(out, shifts[:, :, None, None].expand_as(out))  # one shift per crop and channel
    assert (shifts.abs() <= 0.5).all() and shifts.std(dim=1).min() > 0  # channels shifted differently
    x = torch.randn(50, 3, 16, 16)
    out = augment(x, _off(channel_dropout=0.5), 16, torch.Generator().manual_seed(1))
    zeroed = (out == 0).flatten(2).all(2)
    kept = torch.isclose(out, x, atol=1e-5).flatten(2).all(2)
    assert (zeroed | kept).all() and zeroed.any() and not zeroed.all(1).any()
    blurred = augment(x, _off(blur_prob=1.0, blur_sigma=(1.0, 1.0)), 16, torch.Generator().manual_seed(0))
    assert blurred.std() < 0.8 * x.std() and torch.allclose(blurred.mean((2, 3)), x.mean((2, 3)), atol=0.1)


# encoders ----------------------------------------------------------------------------------------------------

def test_encoders_any_channel_count():
    enc = ResNetEncoder(5, width=4, blocks=(2, 1, 1))
    assert enc(torch.randn(2, 5, 32, 32)).shape == (2, enc.out_dim) and enc.out_dim == 16
    ae = ConvAutoencoder(1, default_config("autoencoder", **{**TINY, "input_size": 16}))
    x = torch.randn(2, 1, 16, 16)
    assert ae.reconstruct(x).shape == x.shape and ae.embed(x).shape == (2, TINY["latent_dim"])


# data --------------------------------------------------------------------------------------------------------

def test_batches_cover_store_and_ignore_worker_count(store):
    data = CellChunks(store, mean=[0, 0, 0], std=[1, 1, 1])
    runs = [list(iter_batches(data, 10, shuffle=True, generator=torch.Generator().manual_seed(5),
                              num_workers=w, buffer_cells=40)) for w in (0, 2)]
    rows = torch.cat([r for _, r in runs[0]])
    assert sorted(rows.tolist()) == list(range(96)) and rows.tolist() != list(range(96))
    for (x0, r0), (x1, r1) in zip(*runs):
        assert torch.equal(r0, r1) and torch.equal(x0, x1)
    x, r = next(iter_batches(data, 96))
    assert torch.equal(r, torch.arange(96))


# training ----------------------------------------------------------------------------------------------------

def _weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.parametrize("method", ["simclr", "byol", "autoencoder"])
def test_training_is_deterministic(store, tmp_path, method):
    for run in ("a", "b"):
        train(store, tmp_path / run, method=method, config=TINY)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["complete"] and config["channels"] == CHANNELS and len(config["history"]) == 2
    assert config["norm_mean"][0] > config["norm_mean"][2]  # DNA is the bright channel of the store
    with pytest.raises(FileExistsError):
        train(store, tmp_path / "a", method=method, config=TINY)


def test_resume_equals_uninterrupted(store, tmp_path):
    train(store, tmp_path / "full", method="byol", config={**TINY, "epochs": 3})

    def stop_in_epoch_2(epoch, n_epochs, step, steps, loss):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(store, tmp_path / "cut", method="byol", config={**TINY, "epochs": 3}, progress=stop_in_epoch_2)
    assert load_checkpoint(tmp_path / "cut")["epoch"] == 1
    with pytest.raises(IncompleteModelError, match="--resume"):
        load_model(tmp_path / "cut")
    train(store, tmp_path / "cut", resume=True)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["complete"]


def test_resume_takes_the_same_partial_augment_and_refuses_a_changed_one(store, tmp_path):
    # pipelines pass a partial augment (merged into the method's defaults); resuming with it is no change
    partial = {"crop_scale": [0.5, 1.0], "brightness": 0.2}
    config = {**TINY, "epochs": 2, "augment": partial}

    def stop_in_epoch_2(epoch, n_epochs, step, steps, loss):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(store, tmp_path / "m", method="simclr", config=config, progress=stop_in_epoch_2)
    with pytest.raises(ValueError, match=r"\['augment'\] differ"):
        train(store, tmp_path / "m", resume=True, config={**config, "augment": {**partial, "brightness": 0.3}})
    train(store, tmp_path / "m", resume=True, config={**config, "norm_by": "plate"})  # as the CLI gives it
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["complete"] and saved["augment"]["brightness"] == 0.2 and saved["norm_by"] == ["plate"]


def test_model_round_trip_and_safe_loading(store, tmp_path):
    train(store, tmp_path / "m", method="simclr", config=TINY)
    model, config = load_model(tmp_path / "m")
    z, _ = embed_cells(store, tmp_path / "m")
    x = next(iter_batches(CellChunks(store, mean=config["norm_mean"], std=config["norm_std"]), 96))[0]
    with torch.no_grad():
        # SimCLR's embedding: every stage's average pool (embed_pool "stages"), the last stage's = model.embed
        assert np.allclose(z, model.encoder.stage_features(center_crop(x, 16)).numpy(), atol=1e-5)
        assert np.allclose(z[:, -8:], model.embed(center_crop(x, 16)).numpy(), atol=1e-5)
    assert set(load_checkpoint(tmp_path / "m")) == {"model", "optimizer", "epoch"}
    # a checkpoint that would run code when unpickled is refused
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))
    torch.save({"model": Payload()}, tmp_path / "m" / "checkpoint.pt")
    with pytest.raises(Exception, match=r"other than weights \(refused; nothing in it was run\)"):
        load_checkpoint(tmp_path / "m")
    # a changed weights file is caught by its checksum
    weights = tmp_path / "m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        load_model(tmp_path / "m")


def test_channel_order_mismatch_refused(store, tmp_path):
    train(store, tmp_path / "m", method="random", config=TINY)
    swapped = _store(tmp_path / "swapped.zarr", channels=["DNA", "Actin", "Tubulin"])
    with pytest.raises(ChannelMismatchError, match=r"\['DNA', 'Tubulin', 'Actin'\].*\['DNA', 'Actin', 'Tubulin'\]"):
        embed_cells(swapped, tmp_path / "m")
    result = CliRunner().invoke(app, ["embed", str(swapped), "--model", str(tmp_path / "m"),
                                      "--adata", str(tmp_path / "x.h5ad")])
    assert result.exit_code == 1 and "channel mismatch" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.h5ad").exists()


def test_pca_matches_full_pca(store, tmp_path):
    from sklearn.decomposition import PCA

    train(store, tmp_path / "pca", method="pca", config={**TINY, "n_components": 3})
    z, config = embed_cells(store, tmp_path / "pca")
    x = next(iter_batches(CellChunks(store, mean=config["norm_mean"], std=config["norm_std"]), 96))[0]
    ref = PCA(3).fit_transform(center_crop(x, 16).flatten(1).numpy())
    for k in range(2):  # the well-separated leading components agree up to sign
        assert abs(np.corrcoef(z[:, k], ref[:, k])[0, 1]) > 0.99
    assert config["history"][0]["cells_per_s"] > 0


def test_embed_aligns_by_cell_id(store, tmp_path):
    train(store, tmp_path / "m", method="random", config=TINY)
    z, _ = embed_cells(store, tmp_path / "m")
    adata = obs_adata(store)[::-3].copy()  # a reordered subset
    embed(adata, store, tmp_path / "m")
    rows = [int(i.rsplit("/", 1)[1]) - 1 for i in adata.obs_names]
    assert np.array_equal(adata.obsm["X_random"], z[rows])
    assert adata.uns["cellkit"]["embeddings"]["X_random"]["channels"] == CHANNELS
    adata = obs_adata(store)
    adata.obs_names = [f"other/{i}" for i in range(adata.n_obs)]
    with pytest.raises(KeyError, match="not in"):
        embed(adata, store, tmp_path / "m")


def test_cli_train_resume_embed(store, tmp_path):
    import anndata as ad

    runner = CliRunner()
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in TINY.items()))
    out, h5ad = tmp_path / "model", tmp_path / "cells.h5ad"
    result = runner.invoke(app, ["train", str(store), "--method", "autoencoder", "--out", str(out),
                                 "--config", str(cfg), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", str(store), "--out", str(out), "--resume", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["epochs_done"] == 2
    result = runner.invoke(app, ["train", str(store), "--out", str(out), "--resume", "--lr", "0.5"])
    assert result.exit_code == 1 and "'lr'" in result.output
    result = runner.invoke(app, ["train", str(store), "--out", str(out)])
    assert result.exit_code == 1 and "--resume" in result.output
    result = runner.invoke(app, ["embed", str(store), "--model", str(out), "--adata", str(h5ad)])
    assert result.exit_code == 0, result.output
    adata = ad.read_h5ad(h5ad)
    assert adata.obsm["X_ae"].shape == (96, TINY["latent_dim"]) and adata.obs_names[0] == "P1/B02/1/1"
    result = runner.invoke(app, ["train", str(store), "--method", "vae", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "unknown method" in result.output
    cfg.write_text("widht: 8\n")
    result = runner.invoke(app, ["train", str(store), "--out", str(tmp_path / "x"), "--config", str(cfg)])
    assert result.exit_code == 1 and "unknown training option" in result.output and "widht" in result.output


def test_import_real_bbbc021_crops(tmp_path):
    import anndata as ad

    from cellkit.io.cells import read_cells

    folder = real_path("bbbc021_singlecell_crops")
    result = CliRunner().invoke(app, ["import-crops", str(folder / "bbbc021_crops_68x68_subset.npz"),
                                      str(folder / "index.csv"), "--out", str(tmp_path / "cells.zarr"),
                                      "--adata", str(tmp_path / "cells.h5ad")])
    assert result.exit_code == 0, result.output
    images, masks, obs = read_cells(tmp_path / "cells.zarr")
    assert images.shape == (2999, 3, 68, 68) and images.dtype == np.uint16
    raw = np.load(folder / "bbbc021_crops_68x68_subset.npz")["crops"]
    assert np.array_equal(images[[0, 2998]].compute(), np.moveaxis(raw[[0, 2998]], -1, 1))
    adata = ad.read_h5ad(tmp_path / "cells.h5ad")
    assert list(adata.obs_names) == list(obs.cell_id)
    assert set(adata.obs.batch) == {"Week4"} and adata.obs.plate.nunique() == 6
    assert (adata.obs.compound == "DMSO").sum() == 1440 and (adata.obs.moa == "Protein synthesis").sum() == 1559


def test_embed_stage(store, tmp_path):
    """The pipeline's embed stage trains each method once and writes its obsm key."""
    import anndata as ad

    from cellkit.workflows.stages import Context
    from cellkit.workflows.stages import embed_stage

    (tmp_path / "cells.zarr").symlink_to(store)
    obs_adata(store).write_h5ad(tmp_path / "cells.h5ad")
    ctx = Context(out=tmp_path)
    embed_stage(ctx, methods=["simclr", "pixel_pca"], config=TINY)
    adata = ad.read_h5ad(tmp_path / "cells.h5ad")
    assert {"X_simclr", "X_pixel_pca"} <= set(adata.obsm) and "X_pca" not in adata.obsm
    assert np.isfinite(adata.obsm["X_simclr"]).all()
    weights = (tmp_path / "models" / "simclr" / "model.safetensors").stat().st_mtime_ns
    embed_stage(ctx, methods=["simclr", "pixel_pca"], config=TINY)  # finished models are not trained again
    assert (tmp_path / "models" / "simclr" / "model.safetensors").stat().st_mtime_ns == weights


def test_norm_by_plate_removes_a_plate_gain(store, tmp_path):
    """A second plate that is the first with each channel's gain x2 / x4 / x1: with norm_by="plate" every
    cell of it embeds exactly like its twin; without, it does not."""
    from cellkit.io.cells import read_cells
    from cellkit.models.data import group_scale
    from cellkit.models.embed import ModelEmbedder

    images, masks, obs = read_cells(store)
    images = np.asarray(images, dtype=np.uint16)
    twin = obs.reset_index(drop=True).assign(plate="P2", cell_id=lambda o: "P2" + o["cell_id"].str[2:])
    gains = np.array([2, 4, 1], dtype=np.uint16)[None, :, None, None]
    two = _store_from(tmp_path / "two.zarr", np.concatenate([images, images * gains]),
                      pd.concat([obs.reset_index(drop=True), twin], ignore_index=True))
    scale, reference = group_scale(two, "plate")
    assert scale.shape == (2 * len(obs), 3) and len(reference) == 3
    np.testing.assert_allclose(scale[len(obs)] * [2, 4, 1], scale[0], rtol=1e-6)
    raw = torch.from_numpy(np.concatenate([images, images * gains]).astype(np.float32))
    for norm_by, same in (("plate", True), (None, False)):
        train(two, tmp_path / str(norm_by), method="simclr", config={**TINY, "epochs": 1, "norm_by": norm_by})
        z, config = embed_cells(two, tmp_path / str(norm_by))
        assert np.array_equal(z[:len(obs)], z[len(obs):]) is same
        embedder = ModelEmbedder(tmp_path / str(norm_by), CHANNELS)  # crops one by one, as robustness does
        factors = embedder.store_scale(two)
        assert (factors is None) is (norm_by is None)
        extra = {} if factors is None else {"scale": torch.from_numpy(factors)}
        np.testing.assert_allclose(embedder(raw, **extra), z, rtol=1e-4, atol=1e-5)
    assert config.get("norm_reference") is None
    saved = json.loads((tmp_path / "plate" / "config.json").read_text())
    assert saved["norm_by"] == ["plate"] and saved["norm_reference"] == reference
    with pytest.raises(ValueError, match="normalize by"):
        group_scale(two, "batch")
    result = CliRunner().invoke(app, ["train", str(two), "--out", str(tmp_path / "cli"), "--norm-by", "batch"])
    assert result.exit_code != 0 and "normalize by" in result.output


def test_simclr_positive_by_well(store, tmp_path):
    """With every cell its own class, SimCLR's loss is NT-Xent; by default (positive_by "auto") the other cells
    of a cell's well are its positives too, contrasted within the plate; "none" gives the two views alone."""
    from cellkit.models.encoders import SimCLR

    model = SimCLR(3, default_config("simclr", **TINY))
    x1, x2 = torch.randn(2, 8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    wells, one_plate = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2]), torch.zeros(8, dtype=torch.int64)
    assert torch.allclose(model.loss(x1, x2, torch.arange(8)), model.loss(x1, x2), atol=1e-5)
    assert not torch.allclose(model.loss(x1, x2, wells), model.loss(x1, x2), atol=1e-3)
    assert torch.allclose(model.loss(x1, x2, wells, one_plate), model.loss(x1, x2, wells), atol=1e-5)
    assert not torch.allclose(model.loss(x1, x2, wells, wells % 2), model.loss(x1, x2, wells), atol=1e-3)
    for name, positive_by in (("wells", "auto"), ("views", "none")):
        train(store, tmp_path / name, method="simclr", config={**TINY, "epochs": 1, "positive_by": positive_by})
    wells_config, views_config = (json.loads((tmp_path / n / "config.json").read_text()) for n in ("wells", "views"))
    assert wells_config["positive_by"] == ["plate", "well"] and wells_config["contrast_within"] == ["plate"]
    assert views_config["positive_by"] is None and views_config["contrast_within"] is None
    assert wells_config["weights_sha256"] != views_config["weights_sha256"]
    with pytest.raises(ValueError, match="MOA"):
        default_config("simclr", positive_by=["moa"])
    with pytest.raises(ValueError, match="needs positive_by"):
        train(store, tmp_path / "g", method="simclr", config={**TINY, "positive_by": None, "contrast_within": "plate"})
    result = CliRunner().invoke(app, ["train", str(store), "--out", str(tmp_path / "cli"), "--positive-by", "site",
                                        "--batch-size", "16"])
    assert result.exit_code != 0 and "no column(s) ['site']" in result.output


def _store_from(path, images, obs):
    write_cells(path, images, np.ones((len(images), 2) + images.shape[-2:], bool), obs, channels=CHANNELS,
                chunk_cells=32)
    return path
