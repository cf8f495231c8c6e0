import anndata as ad
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

from cellkit.cli import app  # noqa: E402
from cellkit.models.hf import MAEEmbedder, MissingModelError, load_mae  # noqa: E402
from cellkit.tl import robustness  # noqa: E402

torch.set_num_threads(1)


def _tiny_mae(path, channels=3, seed=0):
    """A randomly initialised ViT-MAE (16x16 input, 4x4 patches, hidden 16) saved as a local model folder."""
    config = transformers.ViTMAEConfig(image_size=16, patch_size=4, num_channels=channels, hidden_size=16,
                                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                       decoder_hidden_size=8, decoder_num_hidden_layers=1,
                                       decoder_num_attention_heads=2, decoder_intermediate_size=16, mask_ratio=0.75)
    torch.manual_seed(seed)
    transformers.ViTMAEModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_cells):
    root = tmp_path_factory.mktemp("mae")
    return tiny_cells, _tiny_mae(root / "mae3"), _tiny_mae(root / "mae1", channels=1)


def test_embed_cli_writes_x_mae(setup, tmp_path):
    cells, mae3, _ = setup
    h5ad = tmp_path / "cells.h5ad"
    runner = CliRunner()
    res = runner.invoke(app, ["embed", str(cells), "--model", f"hf:{mae3}", "--adata", str(h5ad)])
    assert res.exit_code == 0, res.output
    a = ad.read_h5ad(h5ad)
    z = a.obsm["X_mae"]
    assert z.shape == (a.n_obs, 16) and z.dtype == np.float32 and np.isfinite(z).all()
    info = a.uns["cellkit"]["embeddings"]["X_mae"]
    assert info["channel_mode"] == "rgb" and list(info["channels"]) == ["DNA", "Tubulin", "Actin"]
    # the two kinds of cells (MOA A: big bright nuclei, B: small dim) differ in the embedding
    moa = a.obs["moa"].astype(str).to_numpy()
    gap = np.linalg.norm(z[moa == "A"].mean(0) - z[moa == "B"].mean(0))
    assert gap > 3 * np.linalg.norm(z[moa == "A"].std(0)) / np.sqrt((moa == "A").sum())
    res = runner.invoke(app, ["embed", str(cells), "--model", f"hf:{mae3}", "--adata", str(h5ad), "--key", "X_cls",
                              "--pool", "cls", "--channel-mode", "per-channel"])
    assert res.exit_code == 0, res.output
    a2 = ad.read_h5ad(h5ad)
    np.testing.assert_array_equal(a2.obsm["X_mae"], z)  # the same again, the first key kept
    assert a2.obsm["X_cls"].shape == (a.n_obs, 3 * 16)
    # a new crop is embedded as the store's cells were, from the h5ad's record (used by `cellkit search --crop`)
    from cellkit.io.cells import read_cells
    from cellkit.models.embed import recorded_embedder

    crops = torch.from_numpy(np.asarray(read_cells(cells)[0][[3, 40]], np.float32))
    for key in ("X_mae", "X_cls"):
        embedder, channels = recorded_embedder(a2, key)
        assert channels == ["DNA", "Tubulin", "Actin"]
        np.testing.assert_allclose(embedder(crops), a2.obsm[key][[3, 40]], rtol=1e-4, atol=1e-5)


def test_masking_off_and_channel_modes(setup):
    cells, mae3, mae1 = setup
    x = torch.rand(4, 3, 20, 20) * 1000
    mean, std = [500.0] * 3, [300.0] * 3
    emb = MAEEmbedder(str(mae3), ["DNA", "Tubulin", "Actin"], mean, std)
    assert emb.model.config.mask_ratio == 0
    z = emb(x)
    # every patch is kept: mean-pooled tokens do not depend on the patch order the model draws
    xn = torch.nn.functional.interpolate((x - 500) / 300, size=(16, 16), mode="bilinear", align_corners=False)
    with torch.inference_mode():
        shuffled = emb.model(pixel_values=xn).last_hidden_state  # random patch order, mask ratio 0
    assert shuffled.shape[1] == 1 + 16
    np.testing.assert_allclose(shuffled[:, 1:].mean(1).numpy(), z, atol=1e-5)
    # rgb picks named channels in the given order
    swapped = MAEEmbedder(str(mae3), ["DNA", "Tubulin", "Actin"], mean, std, use_channels=["Actin", "Tubulin", "DNA"])
    np.testing.assert_allclose(swapped(x.flip(1)), z, atol=1e-5)
    with pytest.raises(ValueError, match="per-channel"):
        MAEEmbedder(str(mae1), ["DNA", "Tubulin", "Actin"], mean, std)
    per = MAEEmbedder(str(mae1), ["DNA", "Tubulin", "Actin"], mean, std, channel_mode="per-channel")(x)
    assert per.shape == (4, 48)
    with pytest.raises(ValueError, match="pool"):
        MAEEmbedder(str(mae3), ["DNA", "Tubulin", "Actin"], mean, std, pool="max")


def test_missing_model_message(setup, tmp_path, monkeypatch):
    cells, _, _ = setup
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # an empty cache
    with pytest.raises(MissingModelError, match="local folder"):
        load_mae("hf:facebook/vit-mae-base")
    res = CliRunner().invoke(app, ["embed", str(cells), "--model", f"hf:{tmp_path / 'nothing'}", "--adata",
                                   str(tmp_path / "x.h5ad")])
    message = " ".join(res.output.split())
    assert res.exit_code == 1 and "cannot load the ViT-MAE folder" in message and "without the network" in message
    assert not (tmp_path / "x.h5ad").exists()


def test_mae_in_robustness(setup):
    cells, mae3, _ = setup
    result = robustness(cells, [f"hf:{mae3}"], perturbations={"blur": [1.0, 3.0]}, max_cells=40, k=5)
    blur = result.table[result.table["perturbation"] == "blur"]
    assert list(blur["model"].unique()) == ["mae"]
    assert (blur["cosine_drift_mean"] > 0).all()


MAE_TINY = {"epochs": 2, "batch_size": 16, "input_size": 16, "patch_size": 4, "mae_dim": 16, "mae_depth": 1,
            "mae_heads": 2, "num_workers": 0, "shuffle_cells": 64}


def test_train_mae_resume_and_embed(setup, tmp_path):
    from cellkit.models import embed, load_model, obs_adata, train

    cells, _, _ = setup
    full = train(cells, tmp_path / "full", method="mae", config=MAE_TINY, device="cpu")

    def stop_in_epoch_2(epoch, n_epochs, step, steps, loss):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cells, tmp_path / "cut", method="mae", config=MAE_TINY, device="cpu", progress=stop_in_epoch_2)
    cut = train(cells, tmp_path / "cut", resume=True, device="cpu")
    a, b = load_model(full)[0].state_dict(), load_model(cut)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # masks come from (seed, step): resuming changes nothing
    model, config = load_model(full)
    assert config["method"] == "mae" and config["mask_ratio"] == 0.75 and len(config["history"]) == 2
    assert np.isfinite(config["history"][-1]["loss"])
    adata = obs_adata(cells)
    embed(adata, cells, full)
    z = adata.obsm["X_mae"]
    assert z.shape == (adata.n_obs, 16) and np.isfinite(z).all()
    x = torch.randn(3, 3, 16, 16)
    with torch.inference_mode():
        assert torch.equal(model.embed(x), model.embed(x))  # no masking, no randomness at inference
    res = CliRunner().invoke(app, ["train", str(cells), "--out", str(tmp_path / "cli"), "--method", "mae",
                                   "--epochs", "1", "--batch-size", "16", "--patch-size", "3", "--workers", "0"])
    assert res.exit_code == 1 and "not divisible by patch_size 3" in " ".join(res.output.split())


def test_mae_pixel_target():
    """``mae_norm_pix``: per-patch normalized pixels (True) or the crop's own normalized pixels (False, the
    default since session 8) as the reconstruction target."""
    from cellkit.models import default_config
    from cellkit.models.mae import MaskedAutoencoder

    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    losses = {}
    for norm_pix in (True, False):
        config = default_config("mae", **MAE_TINY, mae_norm_pix=norm_pix)
        torch.manual_seed(0)
        model = MaskedAutoencoder(3, config)
        assert model.net.config.norm_pix_loss is norm_pix
        losses[norm_pix] = []
        for scale in (1.0, 10.0):
            model.steps.zero_()  # the same masked patches for both scales
            losses[norm_pix].append(model.loss(x * scale).item())
    assert default_config("mae")["mae_norm_pix"] is False
    # a per-patch normalized target does not see the crop's scale; the raw target's error grows with it
    assert losses[True][1] == pytest.approx(losses[True][0], rel=0.5)
    assert losses[False][1] > 20 * losses[False][0]
