"""Cellpose backend: weights from the local cache only, training a tiny model, using it."""

import json

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from cellkit.cli import app
from cellkit.segment import (CellposeSegmenter, WeightsNotFoundError, get_segmenter, resolve_model,
                             weights_available)
from cellkit.segment.train import load_image_mask_pairs, split_holdout

from .conftest import real_path

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("cellpose_one_thread")


def test_missing_weights_are_a_clear_error_and_auto_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLKIT_MODELS", str(tmp_path / "no_models"))
    with pytest.raises(WeightsNotFoundError) as err:
        get_segmenter("cellpose")
    message = str(err.value)
    assert "nucleitorch_0" in message and "CELLPOSE_LOCAL_MODELS_PATH" in message and "classical" in message
    with pytest.raises(WeightsNotFoundError, match="no Cellpose model at"):
        resolve_model(tmp_path / "missing.model")
    with pytest.warns(UserWarning, match="using the classical backend"):
        assert get_segmenter("auto").name == "classical"
        assert get_segmenter().name == "classical"  # auto is the default
    # a cached file is found by name, without any download
    cache = tmp_path / "cellpose_cache"
    cache.mkdir()
    (cache / "nucleitorch_0").write_bytes(b"weights")
    assert weights_available("nuclei") and resolve_model("nuclei") == cache / "nucleitorch_0"
    assert not weights_available("cyto3")


def test_training_pairs_are_checked(tmp_path):
    (tmp_path / "im").mkdir()
    (tmp_path / "mk").mkdir()
    tifffile.imwrite(tmp_path / "im" / "a.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(tmp_path / "im" / "b.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(tmp_path / "mk" / "a.tif", np.zeros((16, 32), np.uint16))
    with pytest.raises(ValueError, match="2 problem") as err:
        load_image_mask_pairs(tmp_path / "im", tmp_path / "mk")
    assert "b.tif: no mask" in str(err.value) and "differ in shape" in str(err.value)
    train, val = split_holdout(10, 0.2, seed=0)
    assert len(val) == 2 and not set(train) & set(val) and len(train) + len(val) == 10
    with pytest.raises(ValueError, match="at least 2"):
        split_holdout(1, 0.2, seed=0)


def _small_pairs(tmp_path):
    """Three 128 x 128 crops of real DSB2018 image/mask pairs in tmp_path/im and tmp_path/mk (CPU training
    takes seconds; the models are not meant to be accurate). Returns the full images."""
    dsb = real_path("dsb2018_stage1_test_fluo")
    _, images, masks = load_image_mask_pairs(dsb / "images", dsb / "masks")
    (tmp_path / "im").mkdir()
    (tmp_path / "mk").mkdir()
    for k in range(3):
        tifffile.imwrite(tmp_path / "im" / f"{k}.tif", images[k][:128, :128])
        tifffile.imwrite(tmp_path / "mk" / f"{k}.tif", masks[k][:128, :128].astype(np.uint16))
    return images


def test_train_tiny_model_then_use_it(tmp_path, monkeypatch):
    images = _small_pairs(tmp_path)
    model = tmp_path / "nuclei.cp"
    result = runner.invoke(app, ["train-segmenter", str(tmp_path / "im"), str(tmp_path / "mk"), "--out", str(model),
                                 "--epochs", "2", "--batch-size", "2", "--patch-size", "64", "--images-per-epoch", "4",
                                 "--validation-fraction", "0.34", "--eval-every", "1", "--nbase", "8,16,32,64",
                                 "--flow-cache", str(tmp_path / "flows"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0.0 <= summary["validation_ap@0.5"] <= 1.0 and model.exists()
    report = json.loads((tmp_path / "nuclei.cp.json").read_text())
    assert len(report["validation_names"]) == 1 and not set(report["validation_names"]) & set(report["train_names"])
    assert [h["epoch"] for h in report["learning_curve"]] == [1, 2] and report["exported_epoch"] in (1, 2)
    assert report["sha256"] == summary["sha256"]
    assert (tmp_path / "nuclei.cp.ckpt").is_file()

    # the saved model loads in the Cellpose backend and segments fields and single images
    seg = get_segmenter("cellpose", model=str(model), cell_model=None, gpu=False)
    assert isinstance(seg, CellposeSegmenter)
    field = np.stack([images[0][:128, :128]] * 3).astype(np.uint16)
    out = seg.segment_field(field, ["DNA", "Tubulin", "Actin"])
    assert out.nuclei.shape == (128, 128) and out.cells.dtype == np.uint32
    np.testing.assert_array_equal(np.unique(out.nuclei), np.unique(out.cells))
    result = runner.invoke(app, ["score-segmentation", "--images", str(tmp_path / "im"), "--masks",
                                 str(tmp_path / "mk"), "--backend", "cellpose", "--model", str(model), "--cpu",
                                 "--out", str(tmp_path / "score.json")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "score.json").read_text())
    assert scores["pooled"]["n_images"] == 3 and scores["segmenter"]["model_path"] == str(model)
    assert scores["segmenter"]["model_sha256"] == report["sha256"]

    # the default backend (auto) without Cellpose's cached weights picks the shipped nucleus model, with cells
    # grown from the nuclei when cyto3 is not cached, and records its sha256
    import shutil

    from cellkit.segment.cellpose_backend import SHIPPED_NUCLEUS_MODEL

    shipped = tmp_path / "models" / SHIPPED_NUCLEUS_MODEL
    shipped.parent.mkdir()
    shutil.copy(model, shipped)
    shutil.copy(tmp_path / "nuclei.cp.json", str(shipped) + ".json")
    monkeypatch.setenv("CELLKIT_MODELS", str(shipped.parent))
    auto = get_segmenter()
    assert (auto.name, auto.model_path, auto.cell_model_path) == ("cellpose", str(shipped), None)
    # a model named to auto is used as given, never replaced
    assert get_segmenter("auto", model=str(model)).model_path == str(model)
    with pytest.raises(WeightsNotFoundError):
        get_segmenter("auto", model=str(tmp_path / "missing.cp"))
    assert auto.describe()["model_sha256"] == report["sha256"]


def test_narrow_network_trains_loads_by_path_and_continues(tmp_path):
    import torch

    from cellkit.segment import ModelArchitectureError
    from cellkit.segment.cellpose_backend import load_cellpose

    images = _small_pairs(tmp_path)
    model = tmp_path / "narrow.cp"
    common = [str(tmp_path / "im"), str(tmp_path / "mk"), "--epochs", "3", "--batch-size", "2", "--patch-size", "64",
              "--images-per-epoch", "4", "--validation-fraction", "0",
              "--flow-cache", str(tmp_path / "flows")]
    result = runner.invoke(app, ["train-segmenter", *common, "--out", str(model), "--nbase", "8,16,32,64",
                                 "--checkpoint", str(tmp_path / "run.ckpt")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["nbase"] == [2, 8, 16, 32, 64] and summary["validation_ap@0.5"] is None
    report = json.loads((tmp_path / "narrow.cp.json").read_text())
    assert report["architecture"] == {"nbase": [2, 8, 16, 32, 64], "diam_mean": 17.0}
    assert len(report["train_names"]) == 3 and report["steps"] == 6
    assert (tmp_path / "run.ckpt").is_file()
    # --export-only writes the same weights from the checkpoint, without preparing the training flows again
    exported = tmp_path / "exported.cp"
    result = runner.invoke(app, ["train-segmenter", *common, "--out", str(exported), "--checkpoint",
                                 str(tmp_path / "run.ckpt"), "--export-only", "--flow-cache", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    same, trained = (torch.load(p, map_location="cpu", weights_only=True) for p in (exported, model))
    assert same.keys() == trained.keys() and all(torch.equal(same[k], trained[k]) for k in same)
    assert not (tmp_path / "none").exists()  # no flow was computed

    # the backend rebuilds the narrow network from the file and holds exactly the saved weights
    seg = get_segmenter("cellpose", model=str(model), cell_model=None, diameter="auto", gpu=False)
    net = load_cellpose(str(model), False).net
    assert net.nbase == [2, 8, 16, 32, 64]
    saved = torch.load(model, map_location="cpu", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    labels = seg.segment_nuclei([images[5][:160, :200], images[6][:96, :96]])
    assert [lab.shape for lab in labels] == [(160, 200), (96, 96)] and labels[0].dtype == np.uint32

    # training starts from the narrow model's weights: same network, new weights
    resumed = tmp_path / "resumed.cp"
    result = runner.invoke(app, ["train-segmenter", *common, "--out", str(resumed), "--pretrained", str(model)])
    assert result.exit_code == 0, result.output
    after = torch.load(resumed, map_location="cpu", weights_only=True)
    assert json.loads((tmp_path / "resumed.cp.json").read_text())["architecture"]["nbase"] == [2, 8, 16, 32, 64]
    assert not torch.equal(after["output.2.weight"], saved["output.2.weight"])
    result = runner.invoke(app, ["train-segmenter", *common, "--out", str(tmp_path / "x.cp"), "--pretrained",
                                 str(model), "--nbase", "16,32,64,128"])
    assert result.exit_code == 1 and "differs from the pretrained" in result.output
    # resuming with other settings is refused with the reason
    result = runner.invoke(app, ["train-segmenter", *common, "--out", str(model), "--nbase", "8,16,32,64",
                                 "--checkpoint", str(tmp_path / "run.ckpt"), "--resume", "--batch-size", "4"])
    assert result.exit_code == 1 and "different batch_size" in result.output

    # a report that does not match its weights, and a file that is not a CPnet, are clear errors
    (tmp_path / "resumed.cp.json").write_text(json.dumps({"architecture": {"nbase": [2, 32, 64, 128, 256]}}))
    with pytest.raises(ModelArchitectureError, match="do not belong together"):
        load_cellpose(str(resumed), False)
    (tmp_path / "junk.cp").write_bytes(b"not weights")
    with pytest.raises(ModelArchitectureError, match="not a readable Cellpose weight file"):
        get_segmenter("cellpose", model=str(tmp_path / "junk.cp"), cell_model=None, gpu=False).segment_nuclei(
            [images[5][:64, :64]])
