"""Warm-up epochs (a schedule that lets a budgeted run re-plan its epoch count) and multi-scale embeddings."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cellkit.models import ResNetEncoder, default_config, embed, embed_cells, obs_adata, train
from cellkit.models.embed import recorded_embedder
from cellkit.models.train import _lr_at

from .test_models import TINY, _store

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("cells") / "cells.zarr")


def _weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def test_warmup_does_not_depend_on_the_epoch_count():
    config = {"lr": 1.0, "warmup_epochs": 1}
    assert [_lr_at(config, k, 30, 10) for k in range(10)] == [_lr_at(config, k, 70, 10) for k in range(10)]
    assert _lr_at(config, 0, 30, 10) == pytest.approx(0.1) and _lr_at(config, 9, 30, 10) == pytest.approx(1.0)
    assert _lr_at(config, 10, 30, 10) == pytest.approx(1.0) and _lr_at(config, 20, 30, 10) == pytest.approx(0.5)
    assert _lr_at({"lr": 1.0}, 15, 30, 10) == pytest.approx(0.5)  # no warm-up: the cosine over all steps, as before


def test_one_warmup_epoch_then_resume_equals_training_them_all(store, tmp_path):
    """What benchmarks/ssl_moa.py's train_within does: 1 epoch, re-plan, resume to N = N epochs from the start."""
    config = {**TINY, "warmup_epochs": 1}
    train(store, tmp_path / "all", method="simclr", config={**config, "epochs": 3})
    train(store, tmp_path / "replanned", method="simclr", config={**config, "epochs": 1})
    train(store, tmp_path / "replanned", resume=True, config={"epochs": 3})
    a, b = _weights(tmp_path / "all"), _weights(tmp_path / "replanned")
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = json.loads((tmp_path / "replanned" / "config.json").read_text())
    assert saved["complete"] and saved["epochs_done"] == 3 and len(saved["history"]) == 3
    assert all(0 < h["cpu_seconds"] for h in saved["history"])  # what train_within budgets on
    # without the warm-up the first epoch's learning rate depends on the epoch count: not the same weights
    train(store, tmp_path / "cosine", method="simclr", config={**TINY, "epochs": 1})
    train(store, tmp_path / "cosine", resume=True, config={"epochs": 3})
    train(store, tmp_path / "cosine_all", method="simclr", config={**TINY, "epochs": 3})
    a, b = _weights(tmp_path / "cosine_all"), _weights(tmp_path / "cosine")
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_stage_features_concatenate_every_stage():
    encoder = ResNetEncoder(3, width=4, blocks=(1, 2, 1)).eval()
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    z = encoder.stage_features(x)
    assert z.shape == (5, 4 + 8 + 16) == (5, encoder.stages_dim)
    assert torch.allclose(z[:, -encoder.out_dim:], encoder(x))  # the last stage's pool is the usual embedding
    h = encoder.layers[0](encoder.stem(x))  # the first stage's pool
    assert torch.allclose(z[:, :4], h.mean((2, 3)), atol=1e-6)


def test_embed_pool_stages_recorded_and_rebuilt(store, tmp_path):
    train(store, tmp_path / "m", method="random", config={**TINY, "embed_pool": "last"})
    last, _ = embed_cells(store, tmp_path / "m")
    stages, _ = embed_cells(store, tmp_path / "m", pool="stages")
    assert last.shape[1] == 8 and stages.shape[1] == 4 + 8
    assert np.allclose(stages[:, -8:], last, atol=1e-5)
    adata = obs_adata(store)
    embed(adata, store, tmp_path / "m", key_added="X_ms", pool="stages")
    assert adata.uns["cellkit"]["embeddings"]["X_ms"]["pool"] == "stages"
    embedder, channels = recorded_embedder(adata, "X_ms")
    from cellkit.io.cells import open_cells

    raw = torch.from_numpy(np.asarray(open_cells(store)["images"][:4], dtype=np.float32))
    assert np.allclose(embedder(raw), adata.obsm["X_ms"][:4], atol=1e-4)
    # the option as a training default: recorded in the config and used by embedding
    train(store, tmp_path / "ms", method="random", config=TINY)  # random-init, like SimCLR, pools every stage
    assert embed_cells(store, tmp_path / "ms")[0].shape[1] == 12
    with pytest.raises(ValueError, match="embed_pool"):
        default_config("simclr", embed_pool="max")
    train(store, tmp_path / "ae", method="autoencoder", config=TINY)
    with pytest.raises(ValueError, match="needs a ResNet"):
        embed_cells(store, tmp_path / "ae", pool="stages")
    assert default_config("autoencoder", embed_pool="stages")["embed_pool"] == "last"


def test_ssl_defaults_are_the_measured_recipe():
    """SimCLR / BYOL: SSL_AUGMENT and stage pooling (chosen on ssl_moa seed 3); random-init pools like them;
    weak supervision pools every stage too (chosen on seeds 3 and 5 in session 7); presets only size the views."""
    from cellkit.models.options import SSL_AUGMENT

    for method in ("simclr", "byol"):
        config = default_config(method, "cpu-small")
        assert config["embed_pool"] == "stages" and config["augment"]["view_size"] == "auto"
        assert config["augment"]["crop_scale"] == tuple(SSL_AUGMENT["crop_scale"]) == (0.25, 1.0)
        assert (config["augment"]["brightness"], config["augment"]["contrast"]) == (0.0, 0.0)
        assert config["augment"]["intensity_scale"] == 0.4
    assert default_config("random", "cpu-small")["embed_pool"] == "stages"
    assert default_config("weak", "cpu-small")["embed_pool"] == "stages"
    assert default_config("weak", "cpu-small")["weak_label"] == ["compound"]
    assert default_config("weak", "cpu-small")["augment"]["crop_scale"] == (0.25, 1.0)  # SSL_AUGMENT (session 12)
    assert default_config("weak", "cpu-small")["norm_by"] == "auto"


def test_ssl_default_augmentation_keeps_channel_ratios():
    """SimCLR's default views (session 7) scale all channels of a crop by one factor: on crops whose channels are
    multiples of one pattern, every view keeps the channels' ratios; the session-6 per-channel jitter did not."""
    from cellkit.models import augment
    from cellkit.models.augment import AugmentConfig

    g = torch.Generator().manual_seed(0)
    pattern = torch.rand(8, 1, 40, 40, generator=g) + 0.5
    scale = torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1)
    mean, std = torch.tensor([0.5, 1.0, 3.0]), torch.tensor([0.5, 2.0, 1.0])
    norm = (pattern * scale - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    def ratios(aug):
        cfg = AugmentConfig.from_dict({**aug, "noise_std": 0.0, "view_size": None})
        out = augment(norm, cfg, 24, torch.Generator().manual_seed(1), offset=mean / std)
        raw = (out * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)).mean((2, 3))
        return raw[:, 1:] / raw[:, :1], raw[:, 0] / pattern.mean((1, 2, 3))

    augment_config = default_config("simclr", "cpu-small")["augment"]
    kept, factor = ratios(augment_config)
    assert torch.allclose(kept, torch.tensor([2.0, 4.0]).expand_as(kept), rtol=1e-4)
    assert factor.std() > 0.05  # one intensity factor per crop, not the same for all crops
    jittered, _ = ratios({**augment_config, "brightness": 0.4, "contrast": 0.4, "intensity_scale": 0.0})
    assert not torch.allclose(jittered, torch.tensor([2.0, 4.0]).expand_as(jittered), rtol=1e-2)


def test_ssl_moa_reuses_an_embedding_only_from_the_same_weights(store, tmp_path):
    """benchmarks/ssl_moa.py (and ssl_bbbc021_dose.py, through `embed_model`) skip embedding a model whose
    embedding is in the h5ad, but only when the recorded weights and input normalization are that model's: a
    model retrained in --out (another budget, or the same weights with another norm_by) is embedded again, with
    both poolings."""
    import importlib.util
    from pathlib import Path

    from cellkit.models import embed_h5ad

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ssl_moa.py"
    spec = importlib.util.spec_from_file_location("ssl_moa", path)
    ssl_moa = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ssl_moa)
    h5ad = tmp_path / "cells.h5ad"
    sources = []
    for seed, norm_by in ((0, "plate"), (1, "plate"), (1, None)):
        train(store, tmp_path / "m", method="random", overwrite=True, config={**TINY, "seed": seed, "norm_by": norm_by})
        saved = json.loads((tmp_path / "m" / "config.json").read_text())
        sources.append(ssl_moa.embedding_source(saved["weights_sha256"], saved["norm_by"]))
        if seed == 0:
            embed_h5ad(store, tmp_path / "m", h5ad)
            present = ssl_moa.embedded_weights(h5ad)
            assert present == {"X_random": sources[0]}
            continue
        assert present["X_random"] != sources[-1]  # not the retrained model's
        rows = ssl_moa.embed_model(store, tmp_path / "m", h5ad, "random", present, both_pools=True)
        assert rows == {"random": ("X_random", "stages"), "random-last": ("X_random_last", "last")}
        assert ssl_moa.embedded_weights(h5ad) == present == {"X_random": sources[-1], "X_random_last": sources[-1]}
    assert sources[1].split()[0] == sources[2].split()[0] and sources[1] != sources[2]  # same weights, other input
    written = h5ad.stat().st_mtime_ns
    ssl_moa.embed_model(store, tmp_path / "m", h5ad, "random", present, both_pools=True)  # nothing to embed again
    assert h5ad.stat().st_mtime_ns == written
