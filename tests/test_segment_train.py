"""cellkit's Cellpose training loop: exact resume, checkpoints, learning curve (tiny synthetic runs)."""

import json

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _disks(n=3, size=64, seed=0):
    """n noisy images of bright disks and their label images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        mask, image = np.zeros((size, size), np.int32), rng.normal(10, 2, (size, size))
        for j in range(5):
            cy, cx = rng.integers(8, size - 8, 2)
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(3, 6) ** 2
            mask[disk & (mask == 0)] = j + 1
            image[disk] += 50
        images.append(image.astype(np.float32))
        masks.append(mask)
    return images, masks


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    import torch

    from cellkit.segment.train_data import prepare
    from cellkit.segment.train_loop import TrainConfig, curve_path, load_checkpoint, train

    images, masks = _disks()
    data = prepare(images, masks, ["a", "b", "c"], cache=tmp_path / "flows")
    assert len(list((tmp_path / "flows").iterdir())) == 3  # flows cached once per mask
    # the augmented patches hold the image (channel first), aligned with the cell probability
    from cellpose.transforms import random_rotate_and_resize

    assert data.images[0].shape == (1, 64, 64) and data.flows[0].shape == (3, 64, 64)
    x, y = random_rotate_and_resize(data.images[:1], Y=[data.flows[0].astype(np.float32)], xy=(32, 32),
                                    rescale=np.ones(1))[:2]
    assert np.corrcoef(x[0, 0].ravel(), y[0, 0].ravel())[0, 1] > 0.8
    val = (images[:1], masks[:1], ["a"])
    cfg = TrainConfig(nbase=[2, 8, 16, 32, 64], patch_size=32, batch_size=2, images_per_epoch=4, epochs=4,
                      checkpoint_every=1, eval_every=2)
    whole = train(data, cfg, tmp_path / "whole.ckpt", validation=val, log=None)
    part = train(data, cfg, tmp_path / "part.ckpt", validation=val, stop_after_epoch=2, log=None)
    assert part["epoch"] == 2 and load_checkpoint(tmp_path / "part.ckpt")["epoch"] == 2
    np.random.seed(123)  # a resumed run restores every RNG state itself
    torch.manual_seed(5)
    resumed = train(data, cfg, tmp_path / "part.ckpt", validation=val, resume=True, log=None)
    assert resumed["epoch"] == 4
    assert all(torch.equal(whole["net"][k], resumed["net"][k]) for k in whole["net"])
    opt_a, opt_b = whole["optimizer"]["state"], resumed["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys() and all(torch.equal(opt_a[p][k], opt_b[p][k]) for p in opt_a for k in opt_a[p])
    assert [h["train_loss"] for h in whole["history"]] == [h["train_loss"] for h in resumed["history"]]
    curve = json.loads(curve_path(tmp_path / "part.ckpt").read_text())
    assert [h["epoch"] for h in curve["history"]] == [1, 2, 3, 4]
    assert [("val_ap@0.5" in h) for h in curve["history"]] == [False, True, False, True]
    assert curve["best"]["epoch"] in (2, 4) and "net" not in curve["best"]
    # fixed settings cannot change on resume; a shorter run than the checkpoint is refused
    with pytest.raises(ValueError, match="different patch_size"):
        train(data, TrainConfig(**{**cfg.__dict__, "patch_size": 48}), tmp_path / "part.ckpt", resume=True, log=None)
    with pytest.raises(ValueError, match="past --epochs"):
        train(data, TrainConfig(**{**cfg.__dict__, "epochs": 3}), tmp_path / "part.ckpt", resume=True, log=None)
    (tmp_path / "junk.ckpt").write_bytes(b"x")
    with pytest.raises(Exception):
        load_checkpoint(tmp_path / "junk.ckpt")


def test_checkpoint_with_python_objects_is_refused(tmp_path):
    """A checkpoint is read with weights_only: a file that would run code when unpickled is refused."""
    from fractions import Fraction

    import torch

    from cellkit.segment.train_loop import FORMAT, load_checkpoint

    torch.save({"format": FORMAT, "payload": Fraction(1, 3)}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="holds objects other than tensors and arrays"):
        load_checkpoint(tmp_path / "bad.ckpt")
    torch.save({"format": FORMAT, "rng": np.random.get_state()}, tmp_path / "ok.ckpt")
    assert load_checkpoint(tmp_path / "ok.ckpt")["rng"][0] == "MT19937"


def test_learning_rate_follows_cellpose_schedule():
    from cellkit.segment.train_loop import cellpose_lr

    lr = cellpose_lr(200, 0.005)
    assert len(lr) == 200 and lr[0] == 0 and lr[9] == 0.005 and lr[149] == 0.005
    assert lr[150] == pytest.approx(0.0025) and lr[199] == pytest.approx(0.005 / 2 ** 10)
