"""The microscopy recipe (views from cell size, masking, rotation, intensity scale), kornia blur, presets, weak labels."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from scipy import ndimage as ndi

from cellkit.io.cells import write_cells
from cellkit.models import (MICROSCOPY_AUGMENT, AugmentConfig, augment, blur, cell_view_size, default_config,
                            embed_cells, embedding_spread, supcon, train, view, weak_labels)
from cellkit.models.perturb import perturb

torch.set_num_threads(1)
TINY = {"epochs": 1, "batch_size": 16, "width": 4, "blocks": [1, 1], "proj_hidden": 16, "proj_dim": 8,
        "input_size": 16, "num_workers": 0, "shuffle_cells": 64}


def _store(path, n=64, size=32, radius=6, batches=0):
    """Round cells of radius ``radius`` (cell mask), a nucleus of half that, a bright neighbour outside the cell."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    cell = np.hypot(yy, xx) <= radius
    nucleus = np.hypot(yy, xx) <= radius / 2
    kind = np.arange(n) % 4
    images = rng.poisson(20, (n, 3, size, size)).astype(np.float64)
    images[:, 0] += 1000 * nucleus * (1 + kind)[:, None, None]
    images[:, 1] += 400 * cell
    images[:, 2, :4, :4] += 3000  # a neighbour in the corner
    masks = np.broadcast_to(np.stack([nucleus, cell]), (n, 2, size, size)).copy()
    obs = pd.DataFrame({"cell_id": [f"P1/B0{k % 4 + 2}/1/{k + 1}" for k in range(n)], "plate": "P1",
                        "well": [f"B0{k % 4 + 2}" for k in range(n)],
                        "compound": np.where(kind % 2, "taxol", "DMSO"), "concentration": np.where(kind > 1, 1.0, 0.1),
                        "moa": np.where(kind % 2, "MS", "DMSO")})
    if batches:  # every class in every batch
        obs["batch"] = [f"W{k * batches // n + 1}" for k in range(n)]
    write_cells(path, images.astype(np.uint16), masks, obs, channels=["DNA", "Tubulin", "Actin"], chunk_cells=16)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("recipe") / "cells.zarr")


def test_one_blur_matches_scipy_and_robustness():
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    out = blur(x, 1.5)
    ref = ndi.gaussian_filter(x.numpy(), (0, 0, 1.5, 1.5), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(out.numpy()[..., 6:-6, 6:-6], ref[..., 6:-6, 6:-6], atol=2e-3)
    assert torch.equal(perturb(x, "blur", 1.5), out)  # robustness perturbs with the training blur
    assert torch.equal(blur(x, 0.0), x)
    per_crop = blur(x, torch.tensor([0.0, 1.5]))  # per-crop sigma; 0 leaves that crop unchanged
    assert torch.allclose(per_crop[0], x[0], atol=1e-6) and torch.allclose(per_crop[1], out[1], atol=1e-5)


def test_recipe_keeps_channel_ratios_and_size():
    x = torch.rand(6, 3, 32, 32) + 0.5
    mean, std = torch.tensor([2.0, 1.0, 3.0]), torch.tensor([0.5, 2.0, 1.0])
    offset = mean / std
    norm = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    cfg = AugmentConfig(crop_scale=None, rot90=False, rotation=True, brightness=0.0, contrast=0.0,
                        intensity_scale=0.5, blur_prob=0.0, noise_std=0.0)
    out = augment(norm, cfg, 32, torch.Generator().manual_seed(0), offset=offset)
    raw = out * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
    ratio_in = x[:, 0].mean((1, 2)) / x[:, 1].mean((1, 2))
    ratio_out = raw[:, 0, 8:-8, 8:-8].mean((1, 2)) / raw[:, 1, 8:-8, 8:-8].mean((1, 2))
    factor = raw[:, 0, 8:-8, 8:-8].mean((1, 2)) / x[:, 0, 8:-8, 8:-8].mean((1, 2))
    assert torch.allclose(ratio_in, ratio_out, rtol=0.05)  # one factor for all channels
    assert factor.std() > 0.05  # ... that differs between crops


def test_views_from_cell_size_and_masks(store):
    from cellkit.models import CellChunks

    assert cell_view_size(store, multiple=4) == 12 and cell_view_size(store) == 16  # 12 px across; multiples of 8
    x, masks, _ = CellChunks(store, masks=True)[0]
    cfg = AugmentConfig(view_size=16, mask_background=True)
    v = view(x, cfg, 8, masks=masks)  # 16 px around the nucleus, resampled to 8
    assert v.shape == (64, 3, 8, 8)
    assert (view(x, cfg, 32, masks=masks)[:, 2] == 0).float().mean() > 0.4  # background and neighbour gone
    assert view(x, AugmentConfig(view_size=32), 32)[:, 2, :4, :4].min() > 1000  # unmasked: the neighbour stays
    with pytest.raises(ValueError, match="masks"):
        view(x, cfg, 8)
    with pytest.raises(ValueError, match="center"):
        AugmentConfig.from_dict({"center": "middle"})


def _weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def test_recipe_training_ignores_worker_count(store, tmp_path):
    options = {**TINY, "preset": "cpu-small",
               "augment": {**MICROSCOPY_AUGMENT, "mask_background": True, "center": "cell"}}
    for w in (0, 2):
        train(store, tmp_path / f"w{w}", method="simclr", config={**options, "num_workers": w})
    a, b = _weights(tmp_path / "w0"), _weights(tmp_path / "w2")
    assert all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((tmp_path / "w0" / "config.json").read_text())
    assert config["preset"] == "cpu-small" and config["augment"]["rotation"] and config["view_size_measured"] == 16
    assert config["augment"]["view_size"] == 16 and config["width"] == 4  # explicit options beat the preset
    z, _ = embed_cells(store, tmp_path / "w0")
    assert z.shape == (64, 4 + 8) and np.isfinite(z).all()  # SimCLR's default: both stages' pools (embed_pool)


def test_weak_supervision(store, tmp_path):
    index, classes = weak_labels(store, ["compound", "concentration"])
    assert classes == ["DMSO@0.1", "DMSO@1.0", "taxol@0.1", "taxol@1.0"] and (np.bincount(index) == 16).all()
    with pytest.raises(ValueError, match="MOA"):
        default_config("weak", weak_label=["moa"])
    train(store, tmp_path / "weak", method="weak", config={**TINY, "epochs": 3, "lr": 5e-3})
    config = json.loads((tmp_path / "weak" / "config.json").read_text())
    # the default, chosen on ssl_moa seeds 3 and 5: supcon at T 0.3, negatives within the batch (this store has none),
    # the compound alone as the label (both concentrations one class), every stage pooled
    assert config["weak_classes"] == ["DMSO", "taxol"] and config["weak_label"] == ["compound"] and config["complete"]
    assert (config["weak_loss"], config["temperature"], config["weak_group"]) == ("supcon", 0.3, None)
    assert default_config("weak")["weak_group"] == "auto"
    losses = [h["loss"] for h in config["history"]]
    assert losses[-1] < losses[0]  # learns the treatment classes
    z, _ = embed_cells(store, tmp_path / "weak")
    assert z.shape == (64, 4 + 8)  # both stages' pools (embed_pool "stages")
    with pytest.raises(ValueError, match="preset"):
        default_config("simclr", preset="tpu")


def test_supcon_loss():
    labels = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    # each row: one positive at cos 1, the other two at cos 0 (T = 1): -log(e / (e + 2))
    assert supcon(apart, labels, 1.0).item() == pytest.approx(-np.log(np.e / (np.e + 2)))
    assert supcon(apart, labels, 0.1) < supcon(apart[[0, 2, 1, 3]], labels, 0.1)  # classes apart beat mixed
    # a row without a positive is left out; none at all: 0
    assert supcon(apart[:3], labels[:3], 1.0).item() == pytest.approx(-np.log(np.e / (np.e + 1)))
    assert supcon(apart[:2], torch.tensor([0, 1]), 1.0).item() == 0.0
    with pytest.raises(ValueError):
        supcon(apart, labels[:3])


def test_supcon_groups_contrast_within_group():
    labels = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    # each class alone in its group: a row meets only its positive, nothing to contrast
    assert supcon(apart, labels, 1.0, groups=torch.tensor([0, 0, 1, 1])).item() == pytest.approx(0.0, abs=1e-6)
    # groups across classes: each row meets its positive (other group) and one negative (its group)
    assert supcon(apart, labels, 1.0, groups=torch.tensor([0, 1, 0, 1])).item() == pytest.approx(
        -np.log(np.e / (np.e + 1)))
    # classes 0, 1 in group 0 and 2, 3 in group 1 (two views each); an embedding that also encodes the group
    # (classes 2, 3 on their own axes) beats one that does not, unless the loss is told the groups
    labels, groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    invariant = torch.eye(4)[[0, 0, 1, 1, 0, 0, 1, 1]]
    encodes_group = torch.eye(4)[[0, 0, 1, 1, 2, 2, 3, 3]]
    assert supcon(encodes_group, labels, 0.5) < supcon(invariant, labels, 0.5) - 0.1
    assert supcon(encodes_group, labels, 0.5, groups=groups).item() == pytest.approx(
        supcon(invariant, labels, 0.5, groups=groups).item(), abs=1e-6)
    with pytest.raises(ValueError, match="groups"):
        supcon(encodes_group, labels, groups=torch.tensor([0, 1]))


@pytest.mark.parametrize("loss", ["supcon", "ce+supcon"])
def test_weak_group(store, tmp_path, loss):
    config = {**TINY, "epochs": 3, "lr": 5e-3, "weak_loss": loss, "weak_group": ["concentration"]}
    train(store, tmp_path / "weak", method="weak", config=config)
    saved = json.loads((tmp_path / "weak" / "config.json").read_text())
    assert saved["weak_group"] == ["concentration"] and saved["complete"]
    assert saved["history"][-1]["loss"] < saved["history"][0]["loss"]
    z, _ = embed_cells(store, tmp_path / "weak")
    assert z.shape == (64, 4 + 8) and np.isfinite(z).all()
    with pytest.raises(ValueError, match="MOA"):
        default_config("weak", weak_group=["moa"])
    assert default_config("weak", weak_group="none")["weak_group"] is None
    # "auto": the batch when the store has 2+ batches; this store has none, so all cells are contrasted together
    train(store, tmp_path / "auto", method="weak", config={**config, "epochs": 1, "weak_group": "auto"})
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["weak_group"] is None
    batched = _store(tmp_path / "batched.zarr", batches=2)
    train(batched, tmp_path / "auto2", method="weak", config={**config, "epochs": 1, "weak_group": "auto"})
    assert json.loads((tmp_path / "auto2" / "config.json").read_text())["weak_group"] == ["batch"]
    with pytest.raises(ValueError, match="label_smoothing"):
        train(store, tmp_path / "ls", method="weak", config={**config, "weak_loss": "ce", "label_smoothing": 0.1})


def test_reverse_gradient():
    from cellkit.models.encoders import reverse_gradient

    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x.detach())  # identity forward
    (y * torch.tensor([1.0, 2.0, 4.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.5, -1.0, -2.0]))  # gradient times -scale


def test_weak_adversary(store, tmp_path):
    batched = _store(tmp_path / "batched.zarr", batches=2)
    config = {**TINY, "epochs": 3, "lr": 5e-3, "weak_group": "auto", "weak_adversary": 1.0}
    train(batched, tmp_path / "adv", method="weak", config=config)
    saved = json.loads((tmp_path / "adv" / "config.json").read_text())
    assert saved["weak_group_classes"] == ["W1", "W2"] and saved["weak_adversary"] == 1.0 and saved["complete"]
    assert np.isfinite([h["loss"] for h in saved["history"]]).all()
    assert any(k.startswith("adversary.") for k in load_file(tmp_path / "adv" / "model.safetensors"))
    z, _ = embed_cells(batched, tmp_path / "adv")
    assert z.shape == (64, 4 + 8) and np.isfinite(z).all()
    # no groups on a store without batches: trained without the adversary (no head)
    train(store, tmp_path / "none", method="weak", config={**config, "epochs": 1})
    assert json.loads((tmp_path / "none" / "config.json").read_text())["weak_group_classes"] is None
    assert not any(k.startswith("adversary.") for k in load_file(tmp_path / "none" / "model.safetensors"))
    with pytest.raises(ValueError, match="weak_adversary"):
        train(batched, tmp_path / "neg", method="weak", config={**config, "weak_adversary": -1.0})
    # the CLI: --weak-adversary W, a negative weight is one error line
    from typer.testing import CliRunner

    from cellkit.cli import app

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    args = ["train", str(batched), "--method", "weak", "--config", str(cfg), "--weak-group", "batch"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "cli"), "--weak-adversary", "0.5"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert (saved["weak_adversary"], saved["weak_group"], saved["weak_group_classes"]) == (0.5, ["batch"], ["W1", "W2"])
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "cli2"), "--weak-adversary", "-1"])
    assert result.exit_code == 1 and "weak_adversary" in result.output


def test_weak_adversary_pushes_the_encoder_away_from_the_groups():
    from torch.nn import functional as F

    from cellkit.models.encoders import WeaklySupervised

    torch.manual_seed(0)
    cfg = {**default_config("weak", **TINY), "weak_classes": ["a", "b"], "weak_group_classes": ["W1", "W2"],
           "weak_adversary": 2.0, "weak_group": ["batch"]}
    model = WeaklySupervised(3, cfg)
    views, labels, groups = torch.randn(8, 3, 16, 16), torch.tensor([0, 1] * 4), torch.tensor([0] * 4 + [1] * 4)
    y, g = torch.cat([labels, labels]), torch.cat([groups, groups])
    enc, head = list(model.encoder.parameters()), list(model.adversary.parameters())

    def grads(loss):
        return torch.autograd.grad(loss, enc + head, allow_unused=True, retain_graph=True)

    total = model.loss(views, views, labels, groups)
    h = model.encoder(torch.cat([views, views]))
    main = supcon(model.projector(h), y, cfg["temperature"], groups=g)
    adv = F.cross_entropy(model.adversary(h).float(), g)
    assert total.item() == pytest.approx((main + adv).item(), rel=1e-5)
    g_total, g_main, g_adv = grads(total), grads(main), grads(adv)
    for i in range(len(enc)):  # the encoder follows the main loss and climbs the adversary's (weight 2)
        torch.testing.assert_close(g_total[i], g_main[i] - 2.0 * g_adv[i], rtol=1e-4, atol=1e-6)
    for i in range(len(enc), len(enc) + len(head)):  # the head learns to tell the groups apart
        torch.testing.assert_close(g_total[i], g_adv[i], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="groups"):
        model.loss(views, views, labels)


def test_embedding_spread_finds_collapse():
    rng = torch.Generator().manual_seed(0)
    spread, dims = embedding_spread(torch.randn(256, 32, generator=rng))
    assert spread == pytest.approx(1.0, abs=0.05) and dims > 20
    collapsed = torch.ones(256, 32) + 1e-4 * torch.randn(256, 32, generator=rng)
    assert embedding_spread(collapsed)[0] < 0.01
    line = torch.randn(256, 1, generator=rng) * torch.ones(1, 32)  # all variance along one direction
    assert embedding_spread(line)[1] == pytest.approx(1.0)


@pytest.mark.parametrize("loss", ["ce", "ce+supcon"])  # supcon, the default: test_weak_supervision
def test_weak_losses(store, tmp_path, loss):
    with pytest.raises(ValueError, match="weak_loss"):
        default_config("weak", weak_loss="triplet")
    train(store, tmp_path / "weak", method="weak", config={**TINY, "epochs": 3, "lr": 5e-3, "weak_loss": loss,
                                                           "temperature": 0.1})
    config = json.loads((tmp_path / "weak" / "config.json").read_text())
    assert config["weak_loss"] == loss and config["complete"]
    history = config["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert all(h["spread"] > 0.05 and h["effective_dims"] >= 1 for h in history)  # recorded, not collapsed
    keys = set(load_file(tmp_path / "weak" / "model.safetensors"))
    assert any(k.startswith("projector.") for k in keys) == ("supcon" in loss)
    assert any(k.startswith("classifier.") for k in keys) == ("ce" in loss.split("+"))
    z, _ = embed_cells(store, tmp_path / "weak")
    assert z.shape == (64, 4 + 8) and np.isfinite(z).all()


def test_combine_weights_blocks_by_variance():
    import anndata as ad

    from cellkit import pp

    rng = np.random.default_rng(0)
    X = rng.normal(5, 3, (40, 100)).astype(np.float32)
    X[:, 0] = 1.0  # constant: dropped
    X[3, 1] = np.nan
    adata = ad.AnnData(X, obsm={"X_simclr": rng.normal(0, 0.01, (40, 2))})
    pp.combine(adata, {"X": 1.0, "X_simclr": 2.0})
    Z = adata.obsm["X_combined"]
    assert Z.shape == (40, 101) and np.isfinite(Z).all()
    assert Z[:, :99].var(0).sum() == pytest.approx(1.0, rel=0.03) and Z[:, 99:].var(0).sum() == pytest.approx(4.0)
    assert adata.uns["cellkit"]["combine"]["n_features"] == {"X": 99, "X_simclr": 2}
    with pytest.raises(ValueError):
        pp.combine(adata, {})


def test_combine_norm_keeps_the_first_block():
    import anndata as ad

    from cellkit import pp

    rng = np.random.default_rng(1)
    wells = rng.normal(0.3, 1, (30, 20))
    wells /= np.linalg.norm(wells, axis=1, keepdims=True)  # prepared profiles: unit-length wells
    emb = rng.normal(5, 2, (30, 6))
    adata = ad.AnnData(wells.astype(np.float32), obsm={"X_weak": emb})
    pp.combine(adata, {"X": 1.0, "X_weak": 0.5}, scale="norm")
    Z = adata.obsm["X_combined"]
    np.testing.assert_allclose(Z[:, :20], wells, atol=1e-6)  # untouched: no centring, no per-feature scaling
    assert np.mean(np.sum(Z[:, 20:] ** 2, axis=1)) == pytest.approx(0.25, rel=1e-5)  # block length = weight
    cos = lambda A: (A / np.linalg.norm(A, axis=1, keepdims=True)) @ (A / np.linalg.norm(A, axis=1, keepdims=True)).T  # noqa: E731
    np.testing.assert_allclose(cos(Z[:, 20:]), cos(emb), atol=1e-5)  # the embedding's geometry too
    pp.combine(adata, {"X": 1.0, "X_weak": 0.0}, scale="norm")  # weight 0: exactly the first block's cosines
    np.testing.assert_allclose(cos(adata.obsm["X_combined"]), cos(wells), atol=1e-6)
    assert adata.uns["cellkit"]["combine"]["scale"] == "norm"
    with pytest.raises(ValueError, match="scale"):
        pp.combine(adata, {"X": 1.0}, scale="minmax")
